package outputs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for n := 1; n <= 10; n++ {
		d := b.Delay(n)
		full := min(100*time.Millisecond<<(n-1), time.Second)
		if d < full/2 || d > full {
			t.Fatalf("attempt %d: %v outside [%v, %v]", n, d, full/2, full)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Sleep(ctx, 5); !errors.Is(err, context.Canceled) {
		t.Fatalf("sleep ignored cancel: %v", err)
	}
}

func TestDeadLetter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl", "dead.jsonl")
	d, err := OpenDeadLetter(path)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Write([]DeadLetterEntry{
		Entry("es", Item{ID: "a", Payload: []byte(`{"x":1}`)}, 400, "mapper_parsing_exception: bad"),
		Entry("es", Item{ID: "b", Payload: []byte("CEF:0|not json\n")}, 0, "refused"),
	})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), b)
	}
	var e1, e2 DeadLetterEntry
	json.Unmarshal([]byte(lines[0]), &e1)
	json.Unmarshal([]byte(lines[1]), &e2)
	if e1.ID != "a" || string(e1.Event) != `{"x":1}` || e1.Status != 400 || e1.Time.IsZero() {
		t.Fatalf("entry 1 %+v", e1)
	}
	if e2.Raw != "CEF:0|not json\n" || e2.Event != nil {
		t.Fatalf("entry 2 %+v", e2)
	}
}

func TestCounters(t *testing.T) {
	var c Counters
	c.AddSent(3)
	c.Fail(2, errors.New("boom"))
	c.AddRetried(2)
	c.AddDeadLettered(1)
	h := c.Health()
	if h.Sent != 3 || h.Failed != 2 || h.Retried != 2 || h.DeadLettered != 1 || h.LastError != "boom" || h.LastErrorTime.IsZero() {
		t.Fatalf("%+v", h)
	}
}
