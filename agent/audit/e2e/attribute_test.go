package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/audit"
	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// traced runs the real agent (tracer and lineage store) against the pool
// while the scenario plays, and returns the stored records once every
// ground-truth record is there.
func (p *simPool) traced(t *testing.T) []record.Record {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("xapisim\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.XAPI.URL, cfg.XAPI.PasswordFile = p.srv.URL(), pw
	if fp := p.srv.CertFingerprint(); fp != "" {
		cfg.XAPI.Fingerprint = fp
	} else {
		cfg.XAPI.AllowHTTP = true
	}
	cfg.XAPI.EventTimeout = config.Duration(2 * time.Second)
	cfg.XAPI.BackoffMax = config.Duration(300 * time.Millisecond)
	a, err := pipeline.New(cfg, pipeline.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		BackoffBase: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		a.Close()
	})
	wait(t, "agent baseline and event.from", func() bool { return a.Tracer.PoolUUID() != "" && p.srv.Waiting() > 0 })
	p.play(t)
	truth, _ := p.srv.Truth()
	var got []record.Record
	wait(t, "every ground-truth record stored", func() bool {
		got, err = a.Store.Records(context.Background(), lineage.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, r := range got {
			have[r.ID] = true
		}
		for _, r := range truth {
			if !have[r.ID] {
				return false
			}
		}
		return true
	})
	return got
}

func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// attributor fetches every host's audit log into an Attributor and feeds
// it the Session.create lines of the hosts' xensource.log.
func (p *simPool) attributor(t *testing.T) (*audit.Attributor, []record.Record) {
	t.Helper()
	att := audit.NewAttributor(audit.AttributorConfig{})
	var denied []record.Record
	f := p.fetcher(t, nil)
	err := f.Poll(context.Background(), func(_ context.Context, b *audit.Batch) error {
		if b.Bad > 0 {
			t.Errorf("%d malformed lines from the simulator: %v", b.Bad, b.BadSample)
		}
		up := att.Add(b)
		denied = append(denied, up.Denied...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var xl xensource.Line
	for _, hl := range p.srv.HostLogLines() {
		if xensource.Parse(hl.Line, &xl) != nil {
			continue
		}
		if s, pool, ok := audit.ParseSessionCreate(xl.Message()); ok && !pool {
			att.AddSession(s, hl.Time)
		}
	}
	return att, denied
}

// TestAttributionMatchesGroundTruth: for every scenario with users, the
// records the tracer stored, joined with the pool's audit lines, name the
// ground truth's actor, and every refused call is a denied record.
func TestAttributionMatchesGroundTruth(t *testing.T) {
	scenarios := map[string]*xapisim.Scenario{}
	for _, n := range xapisim.BuiltinNames() {
		sc, err := xapisim.Builtin(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(sc.Users) > 1 {
			scenarios[n] = sc
		}
	}
	f, err := os.Open("testdata/denied-async.json")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := xapisim.LoadScenario(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	scenarios["denied-async"] = sc
	if len(scenarios) < 4 {
		t.Fatalf("only %d scenarios with several users", len(scenarios))
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			p := newSimPoolFor(t, sc, true)
			got := p.traced(t)
			att, denied := p.attributor(t)
			truth, _ := p.srv.Truth()
			want := map[string]record.Record{}
			for _, r := range truth {
				want[r.ID] = r
			}
			attributed := 0
			for i := range got {
				r := &got[i]
				w, ok := want[r.ID]
				if !ok {
					continue // a resync record or one the scenario does not list
				}
				att.Apply(r)
				if r.Actor == nil {
					t.Errorf("%s %s of %s (task %s): no actor", r.Activity, r.Result, r.VMName, r.TaskID)
					continue
				}
				if *r.Actor != *w.Actor {
					t.Errorf("%s %s of %s (task %s): actor %+v, want %+v", r.Activity, r.Result, r.VMName, r.TaskID, *r.Actor, *w.Actor)
				}
				if w.Result == record.Denied && (r.VMUUID != w.VMUUID || r.VMName != w.VMName || r.Result != record.Denied) {
					t.Errorf("refused %s (task %s): vm %s %q result %s, want %s %q", r.Activity, r.TaskID, r.VMUUID, r.VMName, r.Result, w.VMUUID, w.VMName)
				}
				attributed++
			}
			// Every refused call is a denied record, with the ground truth's
			// id, VM, activity and actor.
			byID := map[string]record.Record{}
			for _, d := range denied {
				if _, dup := byID[d.ID]; dup {
					t.Errorf("denied record %s made twice", d.ID)
				}
				byID[d.ID] = d
				if err := d.Validate(); err != nil {
					t.Errorf("denied record does not validate: %v", err)
				}
			}
			wantDenied := p.srv.Denied()
			for _, w := range wantDenied {
				d, ok := byID[w.ID]
				if !ok {
					t.Errorf("refused %s of %s by %s: no denied record", w.Activity, w.VMName, w.Actor.Name)
					continue
				}
				diff := func(field string, a, b any) {
					if !d.IsUnknown(field) && fmt.Sprint(a) != fmt.Sprint(b) {
						t.Errorf("denied %s of %s: %s = %v, want %v", w.Activity, w.VMName, field, a, b)
					}
				}
				diff("activity", d.Activity, w.Activity)
				diff("operation", d.Operation, w.Operation)
				diff("vm_uuid", d.VMUUID, w.VMUUID)
				diff("vm_name", d.VMName, w.VMName)
				diff("parent_vm_uuid", d.ParentVMUUID, w.ParentVMUUID)
				diff("host_uuid", d.HostUUID, w.HostUUID)
				diff("host_name", d.HostName, w.HostName)
				diff("task_id", d.TaskID, w.TaskID)
				diff("result", d.Result, w.Result)
				diff("error", d.Error, w.Error)
				diff("actor", *d.Actor, *w.Actor)
				if w.Source == record.SourceAudit {
					diff("start", record.FormatTime(d.Start), record.FormatTime(w.Start))
				}
				if d.Source != record.SourceAudit {
					t.Errorf("denied record source %s", d.Source)
				}
			}
			if len(byID) != len(wantDenied) {
				t.Errorf("%d denied records, want %d", len(byID), len(wantDenied))
			}
			t.Logf("%d records attributed, %d denied; %+v", attributed, len(byID), att.Stats())
			if attributed != len(truth) {
				t.Errorf("%d of %d ground-truth records checked", attributed, len(truth))
			}
		})
	}
}
