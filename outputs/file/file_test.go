package file

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmlineage/vmlineage/outputs"
)

func TestLinesAndRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "records.jsonl")
	o, err := New(Config{Path: path, MaxBytes: 1000, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	var items []outputs.Item
	for i := 0; i < 100; i++ {
		// A pretty-printed payload: its newlines must not split the line.
		p := fmt.Sprintf("{\n  \"n\": %d,\r\n  \"s\": \"a\\nb\"\n}", i)
		items = append(items, outputs.Item{ID: fmt.Sprint(i), Payload: []byte(p)})
	}
	for i := 0; i < 100; i += 10 {
		if err := o.Send(context.Background(), items[i:i+10]); err != nil {
			t.Fatal(err)
		}
	}
	o.Close()
	if h := o.Health(); h.Sent != 100 {
		t.Fatalf("health %+v", h)
	}
	files := []string{path + ".2", path + ".1", path}
	var got []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 1000 {
			t.Fatalf("%s has %d bytes, over MaxBytes", f, len(b))
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			var v struct {
				N int    `json:"n"`
				S string `json:"s"`
			}
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Fatalf("%s: line %q: %v", f, l, err)
			}
			if v.S != "a\nb" {
				t.Fatalf("escaped newline inside a string changed: %q", v.S)
			}
			got = append(got, v.N)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Fatal("kept more than 2 rotated files")
	}
	// The newest records are kept, in order, without gaps.
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("gap or disorder: %v", got)
		}
	}
	if got[len(got)-1] != 99 || len(got) < 30 {
		t.Fatalf("kept %v", got)
	}
}

func TestReopenAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.jsonl")
	for i := 0; i < 2; i++ {
		o, err := New(Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		o.Send(context.Background(), []outputs.Item{{ID: "a", Payload: []byte(`{"a":1}`)}})
		o.Close()
	}
	b, _ := os.ReadFile(path)
	if string(b) != "{\"a\":1}\n{\"a\":1}\n" {
		t.Fatalf("got %q", b)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("empty path accepted")
	}
}

func TestPartialLineCut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.jsonl")
	os.WriteFile(path, []byte("{\"a\":1}\n{\"b\":"), 0o644)
	o, err := New(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	o.Send(context.Background(), []outputs.Item{{Payload: []byte(`{"c":3}`)}})
	o.Close()
	if b, _ := os.ReadFile(path); string(b) != "{\"a\":1}\n{\"c\":3}\n" {
		t.Fatalf("got %q", b)
	}
}

func TestDiskFull(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "tiny")
	os.Mkdir(mnt, 0o755)
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot mount a tmpfs (needs root): %v", err)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	path := filepath.Join(mnt, "x.jsonl")
	o, err := New(Config{Path: path, MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	line := []byte(`{"pad":"` + strings.Repeat("x", 3000) + `"}`)
	var werr error
	sent := 0
	for i := 0; i < 100 && werr == nil; i++ {
		if werr = o.Send(context.Background(), []outputs.Item{{Payload: line}, {Payload: line}}); werr == nil {
			sent += 2
		}
	}
	if werr == nil || !strings.Contains(werr.Error(), "no space left") {
		t.Fatalf("want ENOSPC, got %v", werr)
	}
	b, _ := os.ReadFile(path)
	if len(b) != sent*(len(line)+1) {
		t.Fatalf("file has %d bytes, want %d whole lines (%d bytes)", len(b), sent, sent*(len(line)+1))
	}
}
