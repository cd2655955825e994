package file

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmlineage/vmlineage/outputs"
)

// TestFailedRotationRecovers: a rotation whose rename fails (Path.1 is a
// non-empty directory, standing for EACCES, ENOSPC...) fails that Send but
// keeps the output alive: once the cause is gone the next Send rotates and
// writes, and nothing written before is lost.
func TestFailedRotationRecovers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	o, err := New(Config{Path: path, MaxBytes: 100, Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	line := []outputs.Item{{ID: "a", Payload: []byte(`{"x":"` + strings.Repeat("a", 60) + `"}`)}}
	if err := o.Send(context.Background(), line); err != nil {
		t.Fatal(err)
	}
	blocker := path + ".1"
	os.MkdirAll(filepath.Join(blocker, "x"), 0o755)
	if err := o.Send(context.Background(), line); err == nil {
		t.Fatal("rotation into a directory succeeded")
	}
	os.RemoveAll(blocker) // the cause is fixed
	if err := o.Send(context.Background(), line); err != nil {
		t.Fatalf("after one failed rotation the output does not write again: %v", err)
	}
	a, _ := os.ReadFile(path)
	b, _ := os.ReadFile(blocker)
	if strings.Count(string(a), "\n") != 1 || strings.Count(string(b), "\n") != 1 {
		t.Fatalf("live file %q, rotated %q: want one line each", a, b)
	}
}

// TestFailedOpenIsRetried: when the open after a rotation failed (f nil),
// the next Send opens the file again instead of answering "closed" for
// ever; after Close, Send does answer ErrClosed.
func TestFailedOpenIsRetried(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	o, err := New(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	o.f.Close()
	o.f = nil // as rotate leaves it when open fails
	if err := o.Send(context.Background(), []outputs.Item{{ID: "a", Payload: []byte(`{}`)}}); err != nil {
		t.Fatalf("Send after a failed open: %v", err)
	}
	o.Close()
	if err := o.Send(context.Background(), []outputs.Item{{ID: "b", Payload: []byte(`{}`)}}); !errors.Is(err, outputs.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "{}\n" {
		t.Fatalf("file: %q", b)
	}
}

// TestRotationAfterTheLiveFileWasRemoved: the live file removed by hand
// (its rename can only fail) costs no rotated file and no Send: rotation
// begins a new file, and the files rotated before stay.
func TestRotationAfterTheLiveFileWasRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	o, err := New(Config{Path: path, MaxBytes: 100, Keep: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	line := []outputs.Item{{ID: "a", Payload: []byte(`{"x":"` + strings.Repeat("a", 60) + `"}`)}}
	for range 4 { // out.jsonl and three rotated
		if err := o.Send(context.Background(), line); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(path)
	for i := range 3 {
		if err := o.Send(context.Background(), line); err != nil {
			t.Fatalf("send %d after the live file was removed: %v", i, err)
		}
	}
	for _, n := range []string{".1", ".2", ".3"} {
		if _, err := os.Stat(path + n); err != nil {
			t.Errorf("rotated file %s lost: %v", n, err)
		}
	}
}
