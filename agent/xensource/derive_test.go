package xensource

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

var goldenHosts = map[string]string{
	"xenserver13": "13131313-1313-4313-8313-131313131313",
	"xenserver14": "14141414-1414-4414-8414-141414141414",
	"xcp81":       "81818181-8181-4181-8181-818181818181",
	"xenserver19": "19191919-1919-4919-8919-191919191919",
}

// TestGoldenDerive derives records from real lines quoted in public bug
// reports (testdata/derive/*.log; the syslog host field names the origin)
// and compares them with the expected JSON next to each file.
func TestGoldenDerive(t *testing.T) {
	files, err := filepath.Glob("testdata/derive/*.log")
	if err != nil || len(files) == 0 {
		t.Fatal("no golden logs", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			d := NewDeriver(Config{PoolUUID: testPool, Hosts: goldenHosts})
			recs := []record.Record{}
			for _, ln := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var l Line
				if err := Parse(ln, &l); err != nil {
					t.Fatalf("%q: %v", ln, err)
				}
				y := NewYearInferer(time.Date(2020, 12, 31, 0, 0, 0, 0, time.UTC), time.UTC)
				e := Entry{Host: l.SyslogHost, Time: y.Infer(l.Stamp), Line: l}
				recs = append(recs, d.Feed(&e)...)
			}
			recs = append(recs, d.Flush()...)
			got, _ := json.MarshalIndent(recs, "", "  ")
			want := strings.TrimSuffix(f, ".log") + ".json"
			if *update {
				if err := os.WriteFile(want, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			w, err := os.ReadFile(want)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(w)) != strings.TrimSpace(string(got)) {
				t.Fatalf("got:\n%s\nwant:\n%s", got, w)
			}
		})
	}
}

// TestDeriverIdleTimeoutAndLate: a task without an end marker is closed by
// the idle timeout (success inferred), and later lines of it are dropped
// rather than producing a second record.
func TestDeriverIdleTimeoutAndLate(t *testing.T) {
	d := NewDeriver(Config{PoolUUID: testPool, IdleTimeout: time.Minute})
	feed := func(ts, line string) []record.Record {
		var l Line
		if err := Parse(ts+" xen1 "+line, &l); err != nil {
			t.Fatal(err)
		}
		y := NewYearInferer(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), time.UTC)
		e := Entry{Host: "xen1", Time: y.Infer(l.Stamp), Line: l}
		return d.Feed(&e)
	}
	reboot := "xapi: [ info||12 |Async.VM.hard_reboot R:aaaaaaaaaaaa|xenops] xenops: VM.reboot 2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d"
	if r := feed("May  1 10:00:00", reboot); len(r) != 0 {
		t.Fatalf("closed too early: %+v", r)
	}
	if r := feed("May  1 10:00:30", "xapi: [debug||1 ||x] unrelated"); len(r) != 0 {
		t.Fatalf("closed too early: %+v", r)
	}
	r := feed("May  1 10:01:01", "xapi: [debug||1 ||x] unrelated")
	if len(r) != 1 || r[0].Result != record.Success || r[0].Activity != record.Reboot || !r[0].IsUnknown("end") ||
		r[0].VMUUID != "2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d" || r[0].HostName != "xen1" {
		t.Fatalf("want one inferred-success reboot record, got %+v", r)
	}
	if r := feed("May  1 10:01:02", reboot); len(r) != 0 || d.Stats.Late != 1 {
		t.Fatalf("late line must be dropped: %+v, stats %+v", r, d.Stats)
	}
	if r := d.Flush(); len(r) != 0 {
		t.Fatalf("flush after late line: %+v", r)
	}
	if d.Stats.Timeouts != 1 {
		t.Fatalf("stats %+v", d.Stats)
	}
}

// TestCorpusReplay: the generated corpora (used by the replay benchmarks)
// parse without a bad line and yield one valid record per operation, with
// the expected share of failures.
func TestCorpusReplay(t *testing.T) {
	for _, dense := range []bool{false, true} {
		t.Run(map[bool]string{false: "realistic", true: "dense"}[dense], func(t *testing.T) {
			recs, n, sc, d := corpusRecords(t, 2<<20, CorpusConfig{Failed: 5, Seed: 7, Dense: dense})
			if sc.Stats.BadTotal() != 0 || sc.Stats.Lines != n {
				t.Fatalf("scanner stats %+v", sc.Stats)
			}
			failed := 0
			ids := map[string]bool{}
			for _, r := range recs {
				if err := r.Validate(); err != nil {
					t.Fatal(err)
				}
				if ids[r.ID] {
					t.Fatalf("duplicate record %s", r.ID)
				}
				ids[r.ID] = true
				if r.Result == record.Failure {
					failed++
				}
			}
			if int64(len(recs)) != d.Stats.Tasks || failed == 0 || failed > len(recs)/4 {
				t.Fatalf("%d records for %d tasks, %d failed", len(recs), d.Stats.Tasks, failed)
			}
			perRecord := float64(n) / float64(len(recs))
			t.Logf("%d lines, %d records: one per %.0f lines", n, len(recs), perRecord)
			if dense && perRecord > 20 || !dense && perRecord < 500 {
				t.Fatalf("one record per %.0f lines: not the density this corpus promises", perRecord)
			}
		})
	}
}

// TestCorpusRealisticSameRecords: the realistic corpus's background and
// per-operation detail lines change no record: deriving it gives exactly
// the records of the same operations' Render lines alone.
func TestCorpusRealisticSameRecords(t *testing.T) {
	cfg := CorpusConfig{Failed: 7, Seed: 3, RunningVMs: 10}
	full, _, _, d := corpusRecords(t, 3<<20, cfg)
	n := len(full)
	cfg.bare, cfg.maxOps = true, int(d.Stats.Tasks)
	bare, _, _, _ := corpusRecords(t, 1<<40, cfg)
	if len(bare) != n || n < 20 {
		t.Fatalf("bare corpus: %d records, full %d", len(bare), n)
	}
	if !reflect.DeepEqual(normalise(full), normalise(bare)) {
		for i := range full {
			if !reflect.DeepEqual(full[i], bare[i]) {
				t.Fatalf("record %d differs:\n full %+v\n bare %+v", i, full[i], bare[i])
			}
		}
		t.Fatal("records differ")
	}
}

// corpusRecords generates a corpus of size bytes and derives its records.
func corpusRecords(t *testing.T, size int64, cfg CorpusConfig) ([]record.Record, int64, *Scanner, *Deriver) {
	t.Helper()
	var buf strings.Builder
	n, err := WriteCorpus(&buf, size, cfg)
	if err != nil || n == 0 {
		t.Fatal(n, err)
	}
	if got := int64(strings.Count(buf.String(), "\n")); got != n {
		t.Fatalf("WriteCorpus reported %d lines, wrote %d", n, got)
	}
	sc := NewScanner("pool", time.Date(2027, 1, 3, 0, 0, 0, 0, time.UTC), time.UTC)
	d := NewDeriver(Config{PoolUUID: testPool, Master: "xen1"})
	var recs []record.Record
	emit := func(e *Entry) { recs = append(recs, d.Feed(e)...) }
	if err := sc.Scan(strings.NewReader(buf.String()), emit); err != nil {
		t.Fatal(err)
	}
	sc.Flush(emit)
	recs = append(recs, d.Flush()...)
	return recs, n, sc, d
}

// TestDeriverExpireLive: a tailer whose logs went quiet closes tasks with
// Expire(now) on a timer.
func TestDeriverExpireLive(t *testing.T) {
	d := NewDeriver(Config{PoolUUID: testPool, Hosts: map[string]string{"xen1": "u1"}})
	var l Line
	line := "May  1 10:00:00 xen1 xapi: [debug||77 |Async.VM.clean_shutdown R:bbbbbbbbbbbb|audit] VM.clean_shutdown: VM = '2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d (db)'"
	if err := Parse(line, &l); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	e := Entry{Host: "xen1", Time: at, Line: l}
	if r := d.Feed(&e); len(r) != 0 {
		t.Fatal(r)
	}
	if r := d.Expire(at.Add(time.Minute)); len(r) != 0 {
		t.Fatalf("closed before the idle timeout: %+v", r)
	}
	r := d.Expire(at.Add(11 * time.Minute))
	if len(r) != 1 || r[0].VMName != "db" || r[0].HostUUID != "u1" || r[0].Result != record.Success {
		t.Fatalf("%+v", r)
	}
}

func TestDueHeapOrder(t *testing.T) {
	var h dueHeap
	base := time.Unix(0, 0)
	for i := 0; i < 500; i++ {
		h.push(dueItem{at: base.Add(time.Duration((i*7919)%1000) * time.Second)})
	}
	prev := time.Time{}
	for len(h) > 0 {
		it := h.pop()
		if it.at.Before(prev) {
			t.Fatalf("heap order broken: %v after %v", it.at, prev)
		}
		prev = it.at
	}
}
