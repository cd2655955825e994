package spool

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
)

// TestAppendRefusesAnUnreadableItem: an item whose frame exceeds what the
// reader accepts is refused at Append (nothing stored, nothing
// acknowledged), instead of being acknowledged, then reported as disk
// damage by Read and cut at the next Open.
func TestAppendRefusesAnUnreadableItem(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Append(ctx, []outputs.Item{{ID: "small", Payload: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	big := outputs.Item{ID: "big", Payload: []byte(strings.Repeat("x", MaxItemBytes)), Time: time.Now()}
	if err := s.Append(ctx, []outputs.Item{big}); !errors.Is(err, ErrTooBig) {
		t.Fatalf("Append of an item over the frame limit: %v, want ErrTooBig", err)
	}
	if err := s.Append(ctx, []outputs.Item{{ID: "after", Payload: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	b, err := s.Read(ctx, 10, 0)
	if err != nil || len(b.Items) != 2 || b.Items[1].ID != "after" {
		t.Fatalf("read: %v %+v", err, b.Items)
	}
	s.Close()
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if st := s2.Stats(); st.Records != 2 || st.CorruptBytes != 0 {
		t.Fatalf("after reopen: %+v", st)
	}
}

// TestBlockOnEmptySpool: with everything acknowledged, the write segment's
// delivered bytes no longer keep an Append that fits MaxBytes waiting (no
// Ack would ever come to free them).
func TestBlockOnEmptySpool(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Append(ctx, []outputs.Item{{ID: "a", Payload: []byte(strings.Repeat("a", 10<<10))}}); err != nil {
		t.Fatal(err)
	}
	b, _ := s.Read(ctx, 10, 0)
	if err := s.Ack(b); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.Append(actx, []outputs.Item{{ID: "b", Payload: []byte(strings.Repeat("b", 60<<10))}}); err != nil {
		t.Fatalf("empty spool refused an Append that fits MaxBytes: %v", err)
	}
	b, err = s.Read(ctx, 10, 0)
	if err != nil || len(b.Items) != 1 || b.Items[0].ID != "b" {
		t.Fatalf("read: %v %d", err, len(b.Items))
	}
}
