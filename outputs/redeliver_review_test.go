package outputs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The mark is only a byte offset: a dead-letter file that was removed (say,
// by an operator after a full redelivery) and written again by the agent is
// read from the old offset, and its first entries are skipped without a
// word once the new file is at least as long as the old mark.
func TestReviewRedeliverSkipsEntriesOfAReplacedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	deadLetters(t, path, "a", "b")
	if _, err := Redeliver(context.Background(), path, &taker{failAt: -1}, RedeliverOptions{}); err != nil {
		t.Fatal(err)
	}
	// All redelivered; the file is removed, the agent later dead-letters
	// three new records (same shape as before, so the same line lengths).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	deadLetters(t, path, "x", "y", "z")
	o := &taker{failAt: -1}
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{})
	if got := strings.Join(o.ids(), ","); got != "x,y,z" {
		t.Fatalf("new file's entries sent: %q (want x,y,z); err=%v stats=%+v", got, err, st)
	}
}

// A payload that is not JSON is kept verbatim in the entry ("payload"), but
// redelivery strips its trailing newlines: the record goes out changed.
func TestReviewRedeliverKeepsARawPayloadVerbatim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.jsonl")
	d, err := OpenDeadLetter(path)
	if err != nil {
		t.Fatal(err)
	}
	orig := "CEF:0|vmlineage|x|1|a|b|5|msg=line one\n"
	if err := d.Write([]DeadLetterEntry{Entry("s", Item{ID: "x", Payload: []byte(orig)}, 413, "too big")}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	o := &taker{failAt: -1}
	if _, err := Redeliver(context.Background(), path, o, RedeliverOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := string(o.batches[0][0].Payload); got != orig {
		t.Fatalf("payload redelivered as %q, dead-lettered as %q", got, orig)
	}
}

// A dead-letter write cut short (ENOSPC, a crash mid-write) leaves a line
// without its newline; the next entry the agent writes is glued to it. That
// entry is whole and counted as handled by the output, yet Redeliver stops
// at the line, tells the operator to "mend or remove" it (removing loses the
// whole entry glued to it), and never sends it.
func TestReviewRedeliverAfterATornDeadLetterWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	deadLetters(t, path, "a")
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"2026-12-04T10:00:00Z","output":"es","id":"torn","event":{"ev`) // the rest never written
	f.Close()
	deadLetters(t, path, "b") // the agent's next dead letter, complete
	o := &taker{failAt: -1}
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{})
	if got := strings.Join(o.ids(), ","); got != "a,b" || st.Torn != 1 {
		t.Fatalf("sent %q, want a,b (b is a whole entry), one torn fragment (%d); err: %v", got, st.Torn, err)
	}
}
