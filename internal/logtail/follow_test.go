package logtail

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// logfile writes numbered lines as a syslog daemon would, and rotates as
// logrotate does.
type logfile struct {
	t    *testing.T
	path string
	f    *os.File
	n    int
}

func newLogfile(t *testing.T) *logfile {
	l := &logfile{t: t, path: filepath.Join(t.TempDir(), "audit.log")}
	l.reopen()
	return l
}

func (l *logfile) reopen() {
	if l.f != nil {
		l.f.Close()
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		l.t.Fatal(err)
	}
	l.f = f
}

// write appends k lines; each starts with a long common prefix, as log
// lines do (so identities rest on more than the first line).
func (l *logfile) write(k int) {
	for i := 0; i < k; i++ {
		l.n++
		fmt.Fprintf(l.f, "Mar 15 10:22:33 xcp-h1 xapi: [20240315T10:22:33.456Z|audit||4711 |x|audit] line %06d %s\n", l.n, strings.Repeat("p", 40))
	}
}

// rename rotates by renaming (name → name.1, older shifted, optionally
// gzipped) and, after the writer's HUP, reopens.
func (l *logfile) rename(gzipOld bool) {
	for i := 8; i >= 1; i-- {
		for _, ext := range []string{"", ".gz"} {
			from := fmt.Sprintf("%s.%d%s", l.path, i, ext)
			if _, err := os.Stat(from); err == nil {
				os.Rename(from, fmt.Sprintf("%s.%d%s", l.path, i+1, ext))
			}
		}
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		l.t.Fatal(err)
	}
	if gzipOld {
		if _, err := os.Stat(l.path + ".2"); err == nil {
			gz(l.t, l.path+".2")
		}
	}
}

func gz(t *testing.T, p string) {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p + ".gz")
	if err != nil {
		t.Fatal(err)
	}
	w := gzip.NewWriter(f)
	w.Write(b)
	w.Close()
	f.Close()
	os.Remove(p)
}

func (l *logfile) copytruncate() {
	b, err := os.ReadFile(l.path)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(l.path+".1", b, 0o644); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Truncate(l.path, 0); err != nil {
		l.t.Fatal(err)
	}
}

type sink struct {
	got map[int]int
	max int
}

func (s *sink) fn(b []byte) error {
	var n int
	i := strings.Index(string(b), "line ")
	if i < 0 {
		return fmt.Errorf("bad line %q", b)
	}
	fmt.Sscanf(string(b[i:]), "line %d", &n)
	s.got[n]++
	if n > s.max {
		s.max = n
	}
	return nil
}

func (s *sink) check(t *testing.T, want int) {
	t.Helper()
	for i := 1; i <= want; i++ {
		if s.got[i] != 1 {
			t.Errorf("line %d delivered %d times", i, s.got[i])
		}
	}
	if len(s.got) != want {
		t.Errorf("%d distinct lines, want %d", len(s.got), want)
	}
}

func TestFollowRotationsOnceEach(t *testing.T) {
	l := newLogfile(t)
	s := &sink{got: map[int]int{}}
	f := New(Config{Path: l.path, RotateGrace: time.Millisecond}, State{})
	poll := func() {
		t.Helper()
		if err := f.Poll(s.fn); err != nil {
			t.Fatal(err)
		}
	}
	l.write(50)
	poll()
	// Rename rotation; the writer keeps appending to the old inode until
	// its HUP, then writes the new file.
	l.rename(false)
	l.write(5) // still to .1
	poll()     // within the grace: the new file is not there yet
	l.reopen()
	l.write(7)
	time.Sleep(5 * time.Millisecond)
	poll()
	// Two rotations between polls, the older one gzipped.
	l.rename(false)
	l.reopen()
	l.write(11)
	l.rename(true)
	l.reopen()
	l.write(13)
	time.Sleep(5 * time.Millisecond)
	poll()
	poll()
	// copytruncate.
	l.write(3)
	poll()
	l.write(4)
	l.copytruncate()
	l.write(6)
	poll()
	poll()
	s.check(t, l.n)
	if st := f.Stats(); st.Rotations < 2 || st.Lines != int64(l.n) {
		t.Errorf("stats %+v, %d lines written", st, l.n)
	}
}

// TestFollowRestart: a follower rebuilt from the persisted state (JSON)
// after each poll, while the file rotates in between, delivers every line
// once.
func TestFollowRestart(t *testing.T) {
	l := newLogfile(t)
	s := &sink{got: map[int]int{}}
	var saved []byte
	restart := func() {
		t.Helper()
		var st State
		if saved != nil {
			if err := json.Unmarshal(saved, &st); err != nil {
				t.Fatal(err)
			}
		}
		f := New(Config{Path: l.path, RotateGrace: time.Millisecond}, st)
		if err := f.Poll(s.fn); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Millisecond)
		if err := f.Poll(s.fn); err != nil {
			t.Fatal(err)
		}
		f.Close()
		saved, _ = json.Marshal(f.State())
	}
	l.write(20)
	restart()
	l.write(5)
	l.rename(false)
	l.reopen()
	l.write(5)
	restart() // the live file moved to .1 while we were down
	l.write(2)
	l.rename(false)
	l.reopen()
	l.rename(true) // .1 → .2.gz
	l.reopen()
	l.write(9)
	restart()
	restart()
	s.check(t, l.n)
}

// TestFollowStopsAtAFailingLine: a line the callback refuses is delivered
// again on the next poll, and nothing after it was consumed.
func TestFollowStopsAtAFailingLine(t *testing.T) {
	l := newLogfile(t)
	l.write(10)
	f := New(Config{Path: l.path}, State{})
	seen := 0
	err := f.Poll(func(b []byte) error {
		seen++
		if seen == 4 {
			return fmt.Errorf("store down")
		}
		return nil
	})
	if err == nil || f.State().Lines != 3 {
		t.Fatalf("err %v, state %+v", err, f.State())
	}
	s := &sink{got: map[int]int{}}
	for i := 1; i <= 3; i++ {
		s.got[i] = 1
	}
	if err := f.Poll(s.fn); err != nil {
		t.Fatal(err)
	}
	s.check(t, 10)
}

func TestFollowOverlongAndMissing(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "audit.log")
	f := New(Config{Path: p, MaxLine: 100}, State{})
	if err := f.Poll(func([]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if f.Stats().Missing != 1 {
		t.Errorf("missing file: %+v", f.Stats())
	}
	os.WriteFile(p, []byte("short one\n"+strings.Repeat("x", 500)+"\nshort two\n"), 0o644)
	var got []string
	if err := f.Poll(func(b []byte) error { got = append(got, string(b)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1] != "short two" || f.Stats().Overlong != 1 {
		t.Errorf("got %q stats %+v", got, f.Stats())
	}
}
