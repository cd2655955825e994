package logsource_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/logsource"
)

// TestTailerBadInput: binary junk, truncated lines, unknown daemons, an
// overlong line, invalid UTF-8, a partial last line, the directory removed
// and re-created with a new file. Counters say what happened; no line is
// consumed twice or before it is whole.
func TestTailerBadInput(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, t.TempDir())
	e := newTestEngine(t, st, rotConfig(), logsource.Active)
	tl, err := logsource.NewTailer(e, logsource.TailConfig{Glob: filepath.Join(dir, "*", "xensource.log"), RotateGrace: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := filepath.Join(dir, "xen1", "xensource.log")
	os.MkdirAll(filepath.Dir(p), 0o755)
	good := "Mar  1 10:00:00 xen1 xapi: [ info||1 ||audit] hello\n"
	content := good +
		"\x00\x01\x02\xff\xfe binary junk\n" + // no syslog time
		"Mar  1 10:0\n" + // truncated
		"Mar  1 10:00:01 xen1 frobd: a daemon nobody knows\n" +
		"Mar  1 10:00:02 xen1 xapi: [ info||1 ||audit] caf\xc3\x28 invalid UTF-8\n" +
		strings.Repeat("x", 3<<20) + "\n" + // overlong
		good +
		"Mar  1 10:00:03 xen1 xapi: [ info||1 ||audit] partial" // no newline yet
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tl.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	s := e.Stats()
	if s.Lines != 6 || s.Overlong != 1 || s.Bad != 2 {
		t.Errorf("after the first poll: lines %d (want 6 whole ones), overlong %d (1), bad %d (2: junk, truncated)", s.Lines, s.Overlong, s.Bad)
	}
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(" line, now whole\n")
	f.Close()
	if err := tl.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(); s.Lines != 7 {
		t.Errorf("the completed line: lines %d, want 7", s.Lines)
	}
	// The directory disappears (NFS unmounted, host removed) and comes back
	// with a new file.
	if err := os.RemoveAll(filepath.Dir(p)); err != nil {
		t.Fatal(err)
	}
	if err := tl.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(); s.Missing == 0 {
		t.Error("a vanished directory is not counted")
	}
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, []byte(good+good), 0o644)
	for i := 0; i < 2; i++ { // the new inode is read after RotateGrace
		if err := tl.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := e.Stats(); s.Lines != 9 {
		t.Errorf("after the directory came back: lines %d, want 9", s.Lines)
	}
	n, err := logsource.FileLines(ctx, st, p)
	if err != nil || n != 9 {
		t.Errorf("persisted line counter %d (%v), want 9", n, err)
	}
	t.Logf("%+v", e.Stats())
}
