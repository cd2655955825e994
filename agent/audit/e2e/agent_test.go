package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/verify"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

// TestAgentAttributesActors is issue 6's acceptance through the agent
// itself: with audit.source xapi (every host's /audit_log) and the hosts'
// xensource.log (root sessions' originators), every record of every
// scenario with several users is sealed with the ground truth's actor,
// every refused call is a denied record, the records a file output ships
// carry their actors, and the chain verifies.
func TestAgentAttributesActors(t *testing.T) {
	scenarios := map[string]*xapisim.Scenario{}
	for _, n := range xapisim.BuiltinNames() {
		if sc, err := xapisim.Builtin(n); err == nil && len(sc.Users) > 1 {
			scenarios[n] = sc
		}
	}
	if len(scenarios) < 3 {
		t.Fatalf("only %d shipped scenarios with several users", len(scenarios))
	}
	// Refused async calls: a task that fails with RBAC_PERMISSION_DENIED
	// and names no VM, completed by the audit line.
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
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) { agentAttribution(t, name, sc) })
	}
}

func agentAttribution(t *testing.T, name string, sc *xapisim.Scenario) {
	p := newSimPoolFor(t, sc, true)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("xapisim\n"), 0o600)
	logs := filepath.Join(dir, "logs")
	w := p.srv.WriteHostLogs(logs, 20*time.Millisecond, time.Minute)
	defer w.Close(context.Background())

	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.XAPI.URL, cfg.XAPI.PasswordFile, cfg.XAPI.Fingerprint = p.srv.URL(), pw, p.srv.CertFingerprint()
	cfg.XAPI.EventTimeout = config.Duration(2 * time.Second)
	cfg.XAPI.BackoffMax = config.Duration(300 * time.Millisecond)
	cfg.Audit.Source, cfg.Audit.Poll = "xapi", config.Duration(300*time.Millisecond)
	// The scenario's host addresses are not routable here: each member
	// answers on its own simulator listener.
	hosts, master := p.srv.HostNames()
	cfg.Audit.HostURLs = map[string]string{}
	for h := range hosts {
		if h != master {
			cfg.Audit.HostURLs[h] = p.srv.HostURL(h)
		}
	}
	cfg.LogSource.Glob = filepath.Join(logs, "*", "xensource.log")
	cfg.LogSource.Poll = config.Duration(50 * time.Millisecond)
	// A record the tracer saw only in part waits until the logs have
	// settled past it, and an operation without an end marker in the logs
	// is open for the idle timeout of log time: the simulator's clock
	// stops with the play, so the default 10 minutes would never pass.
	cfg.LogSource.IdleTimeout = config.Duration(5 * time.Second)
	cfg.LogSource.Hold = config.Duration(2 * time.Second)
	cfg.Chain.Settle = config.Duration(30 * time.Second)
	out := filepath.Join(dir, "records.jsonl")
	cfg.Outputs = []config.Output{{Name: "archive", Type: "file", Format: "json", Path: out}}
	a, err := pipeline.New(cfg, pipeline.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), BackoffBase: 20 * time.Millisecond,
		LogSource: pipeline.LogSourceTuning{Clock: p.srv.Now, Quiet: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done; a.Close() }()
	wait(t, "agent baseline and event.from", func() bool { return a.Tracer.PoolUUID() != "" && p.srv.Waiting() > 0 })
	p.play(t)
	w.Flush() // the play's clock has stopped: the logs' last minute now

	truth, _ := p.srv.Truth()
	denied := p.srv.Denied()
	want := map[string]record.Record{}
	for _, r := range truth {
		want[r.ID] = r
	}
	for _, r := range denied {
		want[r.ID] = r
	}
	var got []record.Record
	began, reported := time.Now(), false
	wait(t, "every record stored and sealed", func() bool {
		got, err = a.Store.Records(ctx, lineage.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range got {
			if _, ok := want[r.ID]; ok && r.Chain != nil {
				n++
			}
		}
		if n != len(want) && time.Since(began) > 50*time.Second && !reported {
			// Name what is still missing or unsealed before the wait fails.
			reported = true
			have := map[string]record.Record{}
			for _, r := range got {
				have[r.ID] = r
			}
			for id, w := range want {
				if r, ok := have[id]; !ok {
					t.Logf("missing: %s %s of %s (%s)", id, w.Activity, w.VMName, w.Result)
				} else if r.Chain == nil {
					t.Logf("unsealed: %s %s of %s source %s unknown %v", id, r.Activity, r.VMName, r.Source, r.Unknown)
				}
			}
		}
		return n == len(want)
	})
	for _, r := range got {
		w, ok := want[r.ID]
		if !ok {
			t.Errorf("record not in the ground truth: %s %s of %s source %s", r.Activity, r.Result, r.VMName, r.Source)
			continue
		}
		if r.Actor == nil {
			t.Errorf("%s %s of %s (task %s): sealed without an actor", r.Activity, r.Result, r.VMName, r.TaskID)
			continue
		}
		if w.Actor != nil && *r.Actor != *w.Actor {
			t.Errorf("%s %s of %s (task %s): actor %+v, want %+v", r.Activity, r.Result, r.VMName, r.TaskID, *r.Actor, *w.Actor)
		}
		if w.Result == record.Denied && (r.Result != record.Denied || r.VMUUID != w.VMUUID) {
			t.Errorf("refused %s of %s: result %s vm %s, want denied %s", r.Activity, w.VMName, r.Result, r.VMUUID, w.VMUUID)
		}
	}
	t.Logf("%s: %d records (%d refused calls), all with the ground truth's actor; attributor %+v", name, len(got), len(denied), a.Attributor().Stats())

	// The output's copy carries the actors and verifies as a chain.
	wait(t, "the file output", func() bool { return len(fileRecords(t, out)) >= len(want) })
	for _, r := range fileRecords(t, out) {
		if w, ok := want[r.ID]; ok && w.Actor != nil && (r.Actor == nil || *r.Actor != *w.Actor) {
			t.Errorf("shipped %s of %s: actor %+v, want %+v", r.Activity, r.VMName, r.Actor, *w.Actor)
		}
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if res, err := verify.File([]verify.Input{{Name: out, R: f}}); err != nil || res.Problem != nil {
		t.Errorf("the shipped copy does not verify: %v %v", err, res.Problem)
	}
	if v, err := a.Store.VerifyChain(ctx); err != nil || v.Break != nil {
		t.Errorf("store chain: %v %+v", err, v)
	}
}

func fileRecords(t *testing.T, path string) []record.Record {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []record.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r record.Record
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.ID == "" {
			continue // a checkpoint line
		}
		out = append(out, r)
	}
	return out
}
