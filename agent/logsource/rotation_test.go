package logsource_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

var stderrW syncBuf

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
func (s *syncBuf) Reset()                      { s.mu.Lock(); defer s.mu.Unlock(); s.b.Reset() }

const rotPool = "4a0f3b9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"

var rotHosts = map[string]string{
	"xen1": "11111111-1111-4111-8111-111111111111",
	"xen2": "22222222-2222-4222-8222-222222222222",
	"xen3": "33333333-3333-4333-8333-333333333333",
}

func rotConfig() xensource.Config {
	return xensource.Config{PoolUUID: rotPool, Hosts: rotHosts, Master: "xen1"}
}

// TestMain doubles as the agent the rotation test kills: with
// LOGSOURCE_CHILD set it tails <dir>/*/xensource.log into <dir>/lineage.db
// until SIGKILL, or until SIGTERM, when it closes every task and commits.
func TestMain(m *testing.M) {
	if dir := os.Getenv("LOGSOURCE_CHILD"); dir != "" {
		os.Exit(child(dir))
	}
	os.Exit(m.Run())
}

func child(dir string) int {
	st, err := openStoreErr(filepath.Join(dir, "lineage.db"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	var lg *slog.Logger
	if os.Getenv("LOGSOURCE_DEBUG") != "" {
		lg = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e := logsource.NewEngine(st, logsource.EngineConfig{Deriver: rotConfig(), Mode: logsource.Active, Log: lg})
	tl, err := logsource.NewTailer(e, logsource.TailConfig{Glob: filepath.Join(dir, "logs", "*", "xensource.log"), Poll: 15 * time.Millisecond, RotateGrace: 40 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	tl.Run(ctx)
	// Final pass: read what is left, then close every open task.
	if err := tl.Poll(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := e.Flush(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	js, _ := json.Marshal(e.Stats())
	fmt.Println(string(js))
	return 0
}

// genOps renders n operations over the three hosts, one every 1.5 s of log
// time, some failing, with noise; it returns each host's lines in order.
func genOps(n int, seed uint64) (map[string][]string, []xensource.HostLine) {
	hosts := []string{"xen1", "xen2", "xen3"}
	ops := []string{"start", "clean_shutdown", "hard_reboot", "suspend", "resume", "pause", "unpause",
		"pool_migrate", "clone", "copy", "snapshot", "checkpoint", "revert", "destroy", "import", "export",
		"provision", "hard_shutdown", "start_on"}
	start := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	var all []xensource.HostLine
	for i := 0; i < n; i++ {
		name := ops[i%len(ops)]
		op := xensource.Op{
			Time:     start.Add(time.Duration(i) * 1500 * time.Millisecond),
			Duration: time.Duration(1+i%4) * time.Second,
			Host:     hosts[(i/3)%len(hosts)], Master: hosts[0], Op: name,
			TaskRef: fmt.Sprintf("OpaqueRef:%08x-%04x-4%03x-8%03x-%012x", uint32(seed)+uint32(i), i&0xffff, i&0xfff, (i>>12)&0xfff, seed),
			VMUUID:  fmt.Sprintf("%08x-0000-4000-8000-%012x", i%50, seed), VMName: fmt.Sprintf("vm-%d", i%50),
			NewName: fmt.Sprintf("vm-%d-child", i), Noise: i%2 == 0, Result: "success",
		}
		if name == "pool_migrate" {
			op.DestHost = hosts[(i/3+1)%len(hosts)]
			op.DestHostUUID = rotHosts[op.DestHost]
		}
		if i%7 == 6 {
			op.Result, op.ErrorInfo = "failure", []string{"VM_BAD_POWER_STATE", op.TaskRef, "halted", "running"}
		}
		all = append(all, xensource.Render(op)...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	out := map[string][]string{}
	for _, hl := range all {
		out[hl.Host] = append(out[hl.Host], hl.Line)
	}
	return out, all
}

// deriveAll is what a reader of the complete logs derives: the hosts'
// lines merged by time into one file (each line names its host).
func deriveAll(t *testing.T, all []xensource.HostLine, ref time.Time) []record.Record {
	st := openStore(t, t.TempDir())
	e := logsource.NewEngine(st, logsource.EngineConfig{Deriver: rotConfig(), Mode: logsource.Active})
	var b strings.Builder
	for _, hl := range all {
		b.WriteString(hl.Line)
		b.WriteByte('\n')
	}
	p := filepath.Join(t.TempDir(), "merged.log")
	os.WriteFile(p, []byte(b.String()), 0o644)
	os.Chtimes(p, ref, ref)
	if _, err := logsource.Replay(context.Background(), e, logsource.ReplayConfig{Files: []string{p}}); err != nil {
		t.Fatal(err)
	}
	return storedRecords(t, st)
}

type rotWriter struct {
	t    *testing.T
	dir  string
	rng  *rand.Rand
	gens map[string]int
	log  []string
}

func (w *rotWriter) path(h string) string { return filepath.Join(w.dir, "logs", h, "xensource.log") }

func (w *rotWriter) appendLines(h string, ls []string) {
	f, err := os.OpenFile(w.path(h), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	var b bytes.Buffer
	for _, l := range ls {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	// Sometimes the last line arrives in two writes (a partial line).
	data := b.Bytes()
	if w.rng.IntN(4) == 0 && len(data) > 10 {
		cut := len(data) - 1 - w.rng.IntN(8)
		f.Write(data[:cut])
		f.Sync()
		time.Sleep(5 * time.Millisecond)
		data = data[cut:]
	}
	f.Write(data)
}

// rotate renames (logrotate's default, gzip of generation 2 on), or copies
// and truncates (copytruncate).
func (w *rotWriter) rotate(h string, copyTruncate bool) {
	p := w.path(h)
	if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
		return // logrotate's notifempty
	}
	for g := 5; g >= 1; g-- {
		for _, ext := range []string{"", ".gz"} {
			from := fmt.Sprintf("%s.%d%s", p, g, ext)
			if _, err := os.Stat(from); err == nil {
				to := fmt.Sprintf("%s.%d%s", p, g+1, ext)
				if g == 5 {
					os.Remove(from)
					continue
				}
				if err := os.Rename(from, to); err != nil {
					w.t.Fatal(err)
				}
				if ext == "" && g+1 >= 2 {
					gz(w.t, to)
				}
			}
		}
	}
	if copyTruncate {
		data, err := os.ReadFile(p)
		if err != nil {
			w.t.Fatal(err)
		}
		os.WriteFile(p+".1", data, 0o644)
		os.Truncate(p, 0)
		w.log = append(w.log, h+": copytruncate")
		fmt.Fprintln(&stderrW, "TEST copytruncate", h)
	} else {
		os.Rename(p, p+".1")
		if fi, err := os.Stat(p + ".1"); err == nil {
			st := fi.Sys().(*syscall.Stat_t)
			fmt.Fprintln(&stderrW, "TEST renamed ino", st.Ino, "size", fi.Size())
		}
		w.log = append(w.log, h+": rename")
		fmt.Fprintln(&stderrW, "TEST rename", h)
	}
}

func gz(t *testing.T, p string) {
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	if err := os.WriteFile(p+".gz", b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(p)
}

// TestRotationKillRestart writes three hosts' logs while renaming,
// copy-truncating and gzipping them, and SIGKILLs and restarts the tailing
// agent (this test binary as a child) again and again. At the end every
// line must have been consumed exactly once (persisted line counters equal
// the lines written) and the records must equal those derived from the
// complete logs.
func TestRotationKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	lines, all := genOps(400, 7)
	w := &rotWriter{t: t, dir: dir, rng: rand.New(rand.NewPCG(1, 2)), gens: map[string]int{}}
	for h := range lines {
		os.MkdirAll(filepath.Dir(w.path(h)), 0o755)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &stderrW
	stderr.Reset()
	start := func() *exec.Cmd {
		c := exec.Command(self, "-test.run=^$")
		c.Env = append(os.Environ(), "LOGSOURCE_CHILD="+dir)
		c.Stderr = &stderrW
		c.Stdout = io.Discard
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	child := start()
	kills, rot := 0, 0
	pos := map[string]int{}
	total := 0
	for h := range lines {
		total += len(lines[h])
	}
	written := 0
	for step := 0; written < total; step++ {
		for _, h := range []string{"xen1", "xen2", "xen3"} {
			n := min(5+w.rng.IntN(40), len(lines[h])-pos[h])
			if n > 0 {
				w.appendLines(h, lines[h][pos[h]:pos[h]+n])
				pos[h] += n
				written += n
			}
		}
		time.Sleep(time.Duration(w.rng.IntN(20)) * time.Millisecond)
		r := w.rng.IntN(100)
		if os.Getenv("ROT_NOFAULT") != "" {
			r = 100
		}
		switch {
		case r < 8:
			w.rotate([]string{"xen1", "xen2", "xen3"}[w.rng.IntN(3)], w.rng.IntN(3) == 0)
			rot++
		case r < 16:
			fmt.Fprintln(&stderrW, "TEST kill")
			child.Process.Signal(syscall.SIGKILL)
			child.Wait()
			kills++
			if w.rng.IntN(2) == 0 { // rotate while nobody watches
				w.rotate([]string{"xen1", "xen2", "xen3"}[w.rng.IntN(3)], w.rng.IntN(3) == 0)
				rot++
			}
			child = start()
		}
	}
	time.Sleep(300 * time.Millisecond)
	child.Process.Signal(syscall.SIGTERM)
	if err := child.Wait(); err != nil {
		t.Fatalf("agent: %v\n%s", err, stderr.String())
	}
	t.Logf("%d lines, %d rotations, %d SIGKILLs", total, rot, kills)
	if (kills < 3 || rot < 3) && os.Getenv("ROT_NOFAULT") == "" {
		t.Fatalf("too few faults (%d kills, %d rotations) to test anything", kills, rot)
	}
	st := openStore(t, dir)
	for h, ls := range lines {
		n, err := logsource.FileLines(context.Background(), st, w.path(h))
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(len(ls)) {
			t.Errorf("%s: %d lines consumed, %d written (rotations: %v)", h, n, len(ls), w.log)
			if os.Getenv("LOGSOURCE_DEBUG") != "" {
				t.Log(stderr.String())
			}
		}
	}
	if os.Getenv("LOGSOURCE_DEBUG") != "" {
		os.WriteFile("/tmp/rot-child.log", []byte(stderr.String()), 0o644)
	}
	want := deriveAll(t, all, time.Now())
	got := storedRecords(t, st)
	if len(want) < 300 {
		t.Fatalf("only %d records expected: generator broken", len(want))
	}
	compareExact(t, want, got)
}

// compareExact requires the same records, field by field.
func compareExact(t *testing.T, want, got []record.Record) {
	t.Helper()
	byID := map[string]record.Record{}
	for _, r := range got {
		byID[r.ID] = r
	}
	bad := 0
	for _, w := range want {
		g, ok := byID[w.ID]
		if !ok {
			t.Errorf("missing %s %s task %s", w.Activity, w.Result, w.TaskID)
			bad++
		} else {
			// The chain link depends on commit order, not on the lines.
			w.Chain, g.Chain = nil, nil
			wj, _ := json.Marshal(w)
			gj, _ := json.Marshal(g)
			if !bytes.Equal(wj, gj) {
				t.Errorf("record differs:\n got %s\nwant %s", gj, wj)
				bad++
			}
		}
		delete(byID, w.ID)
		if bad > 10 {
			t.Fatal("too many differences")
		}
	}
	for _, g := range byID {
		t.Errorf("extra record %+v", g)
	}
}
