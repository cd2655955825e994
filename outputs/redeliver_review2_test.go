package outputs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A torn fragment glued to a whole entry whose event holds an object that
// starts with "time" (an enriched alert carries the sender's JSON as is):
// bytes.LastIndex finds that inner object, not the entry's start, so the
// whole entry is not recovered and the run stops at the line.
func TestReview2TornLineBeforeAnEntryWithANestedTimeObject(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	deadLetters(t, path, "a")
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"2026-12-04T10:00:00Z","output":"es","id":"torn","event":{"ev`) // cut short
	f.Close()
	d, err := OpenDeadLetter(path)
	if err != nil {
		t.Fatal(err)
	}
	ev := `{"@timestamp":"2026-12-04T10:00:01Z","alert":{"time":"2026-12-04T10:00:01Z","rule":"x"}}`
	if err := d.Write([]DeadLetterEntry{Entry("es", Item{ID: "b", Payload: []byte(ev), Time: time.Date(2026, 12, 4, 10, 0, 1, 0, time.UTC)}, 400, "mapping")}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	o := &taker{failAt: -1}
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{})
	if got := strings.Join(o.ids(), ","); got != "a,b" || st.Torn != 1 || err != nil {
		t.Fatalf("sent %q, want a,b (b is a whole entry), torn %d; err: %v", got, st.Torn, err)
	}
}

// reopenIfMoved opens the path again but does not make its directory: once
// <data_dir>/deadletter is removed (an operator clearing dead letters after
// a redelivery), every dead-letter write fails until the agent restarts, so
// the output's Send fails for good and its whole feed stalls. Before the
// change the write went to the unlinked file; OpenDeadLetter makes the
// directory.
func TestReview2DeadLetterWriteAfterItsDirectoryWasRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "deadletter")
	path := filepath.Join(dir, "es.jsonl")
	d, err := OpenDeadLetter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	one := []DeadLetterEntry{Entry("es", Item{ID: "a", Payload: []byte(`{"x":1}`)}, 400, "bad")}
	if err := d.Write(one); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(one); err != nil {
		t.Fatalf("dead-letter write after its directory was removed: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no dead-letter file at the path: %v", err)
	}
}

// A mark written before the digest existed (a bare offset) is never given
// one while nothing is pending, so a file written anew under the name that
// is at least as long as that offset still has its first entries skipped.
func TestReview2BareMarkOnAFileWrittenAnew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "es.jsonl")
	deadLetters(t, path, "a", "b")
	if err := os.WriteFile(MarkPath(path), []byte(size(t, path)+"\n"), 0o640); err != nil { // the old format
		t.Fatal(err)
	}
	if _, err := Redeliver(context.Background(), path, &taker{failAt: -1}, RedeliverOptions{}); err != nil {
		t.Fatal(err) // nothing pending: the mark stays bare
	}
	os.Remove(path)
	deadLetters(t, path, "x", "y", "z")
	o := &taker{failAt: -1}
	st, err := Redeliver(context.Background(), path, o, RedeliverOptions{})
	if got := strings.Join(o.ids(), ","); got != "x,y,z" {
		t.Fatalf("new file's entries sent: %q (want x,y,z); err=%v stats=%+v", got, err, st)
	}
}
