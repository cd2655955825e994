package outputs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// taker records what Redeliver sends; failAt makes the Send with that
// index (from 0) fail.
type taker struct {
	batches [][]Item
	failAt  int
	calls   int
	confirm error
	after   time.Duration
}

func (o *taker) Name() string { return "taker" }
func (o *taker) Close() error { return nil }
func (o *taker) Send(_ context.Context, items []Item) error {
	defer func() { o.calls++ }()
	if o.calls == o.failAt {
		return errors.New("receiver down")
	}
	o.batches = append(o.batches, append([]Item(nil), items...))
	return nil
}

func (o *taker) ids() []string {
	var s []string
	for _, b := range o.batches {
		for _, it := range b {
			s = append(s, it.ID)
		}
	}
	return s
}

// confirming is a taker that is a Confirmer.
type confirming struct{ *taker }

func (c confirming) ConfirmAfter() time.Duration    { return c.after }
func (c confirming) Confirm(sentAt time.Time) error { return c.confirm }

func deadLetters(t *testing.T, path string, ids ...string) {
	t.Helper()
	d, err := OpenDeadLetter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var es []DeadLetterEntry
	for i, id := range ids {
		at := time.Date(2026, 12, 4, 10, 0, i, 0, time.UTC)
		if i%2 == 0 {
			es = append(es, Entry("es", Item{ID: id, Payload: []byte(`{"event":{"id":"` + id + `"}}`), Time: at}, 400, "document_parsing_exception: event.duration"))
		} else {
			es = append(es, Entry("es", Item{ID: id, Payload: []byte("CEF:0|vmlineage|" + id), Time: at}, 413, "too big"))
		}
	}
	if err := d.Write(es); err != nil {
		t.Fatal(err)
	}
}

func mark(t *testing.T, path string) string {
	b, err := os.ReadFile(MarkPath(path))
	if err != nil {
		return "none"
	}
	offset, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ") // then the first line's digest
	return offset
}

func size(t *testing.T, path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(fi.Size())
}

func TestRedeliverSendsWhatIsAfterTheMarkOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	deadLetters(t, path, "a", "b", "c")
	whole := size(t, path)
	// A line the agent is still writing is left for the next run.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"2026-12-04T10:00:00Z","output":"es","id":"d","event":{"ev`)
	f.Close()

	o := &taker{failAt: -1}
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.ids(), ","); got != "a,b,c" || len(o.batches) != 2 || st.Sent != 3 || st.Pending != 3 {
		t.Fatalf("sent %s in %d batches, stats %+v", got, len(o.batches), st)
	}
	if m := mark(t, path); m != whole {
		t.Fatalf("mark %s, want %s (end of the last whole line)", m, whole)
	}
	a, b := o.batches[0][0], o.batches[0][1]
	if string(a.Payload) != `{"event":{"id":"a"}}` || !a.Time.Equal(time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("item a: %q at %v", a.Payload, a.Time)
	}
	if string(b.Payload) != "CEF:0|vmlineage|b" || !b.Time.Equal(time.Date(2026, 12, 4, 10, 0, 1, 0, time.UTC)) {
		t.Fatalf("item b: %q at %v", b.Payload, b.Time)
	}
	if st.ByReason["400 document_parsing_exception: event.duration"] != 2 || st.ByReason["413 too big"] != 1 {
		t.Fatalf("reasons %v", st.ByReason)
	}

	// Nothing new: nothing sent.
	o2 := &taker{failAt: -1}
	if st, err := Redeliver(context.Background(), path, o2, RedeliverOptions{}); err != nil || st.Pending != 0 || len(o2.batches) != 0 {
		t.Fatalf("second run: %+v %v, sent %v", st, err, o2.ids())
	}
	// The agent finishes its line and writes one more: both go next time.
	f, _ = os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`ent":{"id":"d"}}}` + "\n")
	f.Close()
	deadLetters(t, path, "e")
	o3 := &taker{failAt: -1}
	if _, err := Redeliver(context.Background(), path, o3, RedeliverOptions{}); err != nil || strings.Join(o3.ids(), ",") != "d,e" {
		t.Fatalf("third run: %v, sent %v", err, o3.ids())
	}
	if m := mark(t, path); m != size(t, path) {
		t.Fatalf("mark %s, file %s", m, size(t, path))
	}
}

func TestRedeliverStopsAtAFailedBatchAndResumes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	deadLetters(t, path, "a", "b")
	afterB := size(t, path)
	deadLetters(t, path, "c", "d", "e")
	o := &taker{failAt: 1}
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{Batch: 2})
	if err == nil || !strings.Contains(err.Error(), "receiver down") || !strings.Contains(err.Error(), "mark stays at byte "+afterB) {
		t.Fatalf("err %v", err)
	}
	if st.Sent != 2 || mark(t, path) != afterB {
		t.Fatalf("sent %d, mark %s, want 2 and %s", st.Sent, mark(t, path), afterB)
	}
	o2 := &taker{failAt: -1}
	if _, err := Redeliver(context.Background(), path, o2, RedeliverOptions{Batch: 2}); err != nil || strings.Join(o2.ids(), ",") != "c,d,e" {
		t.Fatalf("resumed: %v, sent %v", err, o2.ids())
	}
}

func TestRedeliverNamesABadLineAndSendsWhatCameBefore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	deadLetters(t, path, "a")
	before := size(t, path)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("not json\n")
	f.Close()
	deadLetters(t, path, "b")
	o := &taker{failAt: -1}
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{})
	if err == nil || !strings.Contains(err.Error(), "line 2 after the mark (byte "+before+")") {
		t.Fatalf("err %v", err)
	}
	if strings.Join(o.ids(), ",") != "a" || st.Sent != 1 || mark(t, path) != before {
		t.Fatalf("sent %v, mark %s, want a and %s", o.ids(), mark(t, path), before)
	}
	// An entry with neither event nor payload is refused too.
	p2 := filepath.Join(t.TempDir(), "x.jsonl")
	os.WriteFile(p2, []byte(`{"id":"x","error":"e"}`+"\n"), 0o600)
	if _, err := Redeliver(context.Background(), p2, &taker{failAt: -1}, RedeliverOptions{}); err == nil || !strings.Contains(err.Error(), "no event or payload") {
		t.Fatalf("empty entry: %v", err)
	}
}

func TestRedeliverMovesTheMarkOnlyPastConfirmedBatches(t *testing.T) {
	path := filepath.Join(t.TempDir(), "syslog.jsonl")
	deadLetters(t, path, "a", "b", "c")
	o := confirming{&taker{failAt: -1, after: 50 * time.Millisecond, confirm: errors.New("connection reset")}}
	start := time.Now()
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{Batch: 2})
	if err == nil || !strings.Contains(err.Error(), "may be lost") || st.Sent != 0 || mark(t, path) != "none" {
		t.Fatalf("unconfirmed: %v, sent %d, mark %s", err, st.Sent, mark(t, path))
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("did not wait ConfirmAfter before confirming")
	}
	o.confirm = nil
	if st, err := Redeliver(context.Background(), path, o, RedeliverOptions{Batch: 2}); err != nil || st.Sent != 3 || mark(t, path) != size(t, path) {
		t.Fatalf("confirmed: %+v %v, mark %s", st, err, mark(t, path))
	}
}

func TestRedeliverRefusesABadMarkAndASecondRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	deadLetters(t, path, "a")
	// A mark past the end belongs to a file since cut: from the top.
	os.WriteFile(MarkPath(path), []byte("99999\n"), 0o600)
	o0 := &taker{failAt: -1}
	if st, err := Redeliver(context.Background(), path, o0, RedeliverOptions{}); err != nil || !st.Replaced || strings.Join(o0.ids(), ",") != "a" {
		t.Fatalf("mark past the end: %+v %v, sent %v", st, err, o0.ids())
	}
	os.WriteFile(MarkPath(path), []byte("ten\n"), 0o600)
	if _, err := Redeliver(context.Background(), path, &taker{failAt: -1}, RedeliverOptions{}); err == nil || !strings.Contains(err.Error(), "not a byte offset") {
		t.Fatalf("garbled mark: %v", err)
	}
	os.Remove(MarkPath(path))
	l, err := os.OpenFile(MarkPath(path)+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := syscall.Flock(int(l.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	o := &taker{failAt: -1}
	if _, err := Redeliver(context.Background(), path, o, RedeliverOptions{}); err == nil || !strings.Contains(err.Error(), "another redelivery") || len(o.batches) != 0 {
		t.Fatalf("second run: %v, sent %v", err, o.ids())
	}
	// Counting needs no lock.
	if st, err := PendingDeadLetters(path); err != nil || st.Pending != 1 {
		t.Fatalf("pending while a run holds the lock: %+v %v", st, err)
	}
}

func TestRedeliverDryRunCountsWithoutSending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	deadLetters(t, path, "a", "b", "c")
	o := &taker{failAt: -1}
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{DryRun: true})
	if err != nil || st.Pending != 3 || st.Sent != 0 || len(o.batches) != 0 || mark(t, path) != "none" {
		t.Fatalf("dry run: %+v %v, sent %v, mark %s", st, err, o.ids(), mark(t, path))
	}
}

// FuzzRedeliver: whatever a dead-letter file holds, a run never panics,
// never moves the mark past the last whole line, and sends entries only
// from lines before the first bad one.
func FuzzRedeliver(f *testing.F) {
	f.Add([]byte(`{"id":"a","event":{"x":1}}` + "\n" + `{"id":"b","payload":"CEF:0|x"}` + "\n"))
	f.Add([]byte(`{"id":"a","event":{"x":1}}` + "\nnot json\n" + `{"id":"b","payload":"y"}` + "\n"))
	f.Add([]byte("\n\n{\"id\":\"a\",\"payload\":\"p\",\"item_time\":\"2026-12-04T10:00:00Z\"}"))
	f.Add([]byte(`{"id":"a","event":null,"payload":""}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "dl.jsonl")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		o := &taker{failAt: -1}
		st, err := Redeliver(context.Background(), path, o, RedeliverOptions{Batch: 2})
		lastNL := int64(bytes.LastIndexByte(data, '\n') + 1)
		if st.To > lastNL {
			t.Fatalf("mark %d past the last whole line (%d)", st.To, lastNL)
		}
		if err == nil && st.Sent != st.Pending {
			t.Fatalf("no error, but %d of %d pending sent", st.Sent, st.Pending)
		}
		if st.Sent != len(o.ids()) {
			t.Fatalf("stats say %d sent, the output took %d", st.Sent, len(o.ids()))
		}
		// A second run starts at the mark and sends only what was left.
		o2 := &taker{failAt: -1}
		st2, _ := Redeliver(context.Background(), path, o2, RedeliverOptions{})
		if st2.From != st.To {
			t.Fatalf("second run from %d, the first left the mark at %d", st2.From, st.To)
		}
		if err == nil && len(o2.ids()) != 0 {
			t.Fatalf("a clean run left %v to send again", o2.ids())
		}
	})
}

// The agent keeps its dead-letter file open; removed or replaced under it
// (an operator's rm, an editor's save), the next entries go to a file at
// the path again, not to one nobody can see.
func TestDeadLetterReopensAFileRemovedUnderIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	d, err := OpenDeadLetter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	one := func(id string) []DeadLetterEntry {
		return []DeadLetterEntry{Entry("es", Item{ID: id, Payload: []byte(`{"x":1}`)}, 400, "bad")}
	}
	if err := d.Write(one("a")); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := d.Write(one("b")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path+".new", []byte("{}\n"), 0o600)
	os.Rename(path+".new", path)
	if err := d.Write(one("c")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), `"id":"b"`) || !strings.Contains(string(b), `"id":"c"`) || !strings.HasPrefix(string(b), "{}\n") {
		t.Fatalf("after the replacement the file holds %q", b)
	}
}

// slowConfirming sends slower than it confirms: each batch is confirmed
// (and the mark moved) while later ones go out, not all at the end.
type slowConfirming struct {
	*taker
	confirms       int
	confirmsAtSend []int
}

func (c *slowConfirming) ConfirmAfter() time.Duration { return 10 * time.Millisecond }
func (c *slowConfirming) Confirm(time.Time) error     { c.confirms++; return nil }
func (c *slowConfirming) Send(ctx context.Context, items []Item) error {
	c.confirmsAtSend = append(c.confirmsAtSend, c.confirms)
	time.Sleep(20 * time.Millisecond)
	return c.taker.Send(ctx, items)
}

func TestRedeliverConfirmsAsItGoes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "syslog.jsonl")
	deadLetters(t, path, "a", "b", "c", "d")
	o := &slowConfirming{taker: &taker{failAt: -1}}
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{Batch: 1})
	if err != nil || st.Sent != 4 || o.confirms != 4 || mark(t, path) != size(t, path) {
		t.Fatalf("%+v %v, %d confirms, mark %s", st, err, o.confirms, mark(t, path))
	}
	if got := o.confirmsAtSend; len(got) != 4 || got[3] < 2 {
		t.Fatalf("confirmations done before each send: %v, want batches confirmed while later ones went out", got)
	}
}
