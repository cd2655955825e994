package spool

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzRecover: a segment file and a cursor file with any content (crash
// debris, damage) must open without panic; the frames before the first bad
// one are read back intact and the spool keeps working.
func FuzzRecover(f *testing.F) {
	good := appendFrame(appendFrame(nil, item(1)), item(2))
	f.Add(good, []byte{})
	f.Add(good[:len(good)-3], []byte{})
	f.Add(append(good, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4), make([]byte, 64))
	f.Add([]byte{}, []byte("garbage cursor"))
	f.Fuzz(func(t *testing.T, seg, cursor []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, segName(1)), seg, 0o640)
		if len(cursor) > 0 {
			os.WriteFile(filepath.Join(dir, cursorFile), cursor, 0o640)
		}
		s, err := Open(dir, Options{MaxBytes: 1 << 20})
		if err != nil {
			return // a clear error is fine; a panic is not
		}
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.Append(ctx, items(100, 1)); err != nil {
			t.Fatalf("append after recovery: %v", err)
		}
		var last string
		for s.Stats().Records > 0 {
			b, err := s.Read(ctx, 10, 0)
			if err != nil {
				t.Fatalf("read: %v (stats %+v)", err, s.Stats())
			}
			for _, it := range b.Items {
				last = it.ID
			}
			s.Ack(b)
		}
		if last != item(100).ID {
			t.Fatalf("the record appended after recovery came back as %q", last)
		}
	})
}
