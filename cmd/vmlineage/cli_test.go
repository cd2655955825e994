package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// The acceptance of `make demo`: the threat-model tree with origin
// destroyed, its five clones under it, and vm5 halted.
func TestDemoPrintsThreatModelTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	// It has failed in full-suite runs (never alone) with nothing traced:
	// on failure the goroutines say where the agent waited.
	t.Setenv("VMLINEAGE_DEMO_STACKS", "1")
	var out, errs bytes.Buffer
	if err := runDemo(context.Background(), &out, &errs, "threat-model", 0, dir, 2*time.Minute); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errs.String())
	}
	s := out.String()
	if !regexp.MustCompile(`(?m)^origin .*\[destroyed `).MatchString(s) {
		t.Errorf("origin not shown destroyed at the root:\n%s", s)
	}
	for _, vm := range []string{"vm1", "vm2", "vm3", "vm4", "vm5"} {
		if !regexp.MustCompile(`(?m)^[├└]── ` + vm + ` .*<- clone$`).MatchString(s) {
			t.Errorf("%s not shown as a clone under origin:\n%s", vm, s)
		}
	}
	if !regexp.MustCompile(`(?m)^└── vm5 .*\[halted\]`).MatchString(s) {
		t.Errorf("vm5 not shown halted:\n%s", s)
	}
	if !strings.Contains(s, "12 records traced, 12 expected") {
		t.Errorf("demo did not trace every record:\n%s", s)
	}

	// The store the demo kept answers the other commands.
	js, err := run(t, "tree", "--data-dir", dir, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(js), "\n")
	if len(lines) != 6 {
		t.Fatalf("tree --format json: want one VM per line (6), got %d:\n%s", len(lines), js)
	}
	for _, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("tree json line %q: %v", l, err)
		}
		for _, k := range []string{"vm_uuid", "name", "parent_vm_uuid", "kind", "power_state", "destroyed"} {
			if _, ok := v[k]; !ok {
				t.Errorf("tree json line lacks %q: %s", k, l)
			}
		}
		if v["name"] == "origin" && v["destroyed"] != true {
			t.Errorf("origin must be destroyed: %s", l)
		}
	}
	recs, err := run(t, "records", "--data-dir", dir, "--format", "json", "--vm", "vm5")
	if err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, l := range strings.Split(strings.TrimSpace(recs), "\n") {
		var r struct{ Activity string }
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		acts = append(acts, r.Activity)
	}
	if strings.Join(acts, ",") != "clone,start,shutdown" {
		t.Errorf("records of vm5: %v", acts)
	}
	if _, err := run(t, "records", "--data-dir", dir, "--activity", "teleport"); err == nil || !strings.Contains(err.Error(), "teleport") {
		t.Errorf("a bad activity must be named: %v", err)
	}
	at, err := run(t, "at", "2024-03-01T09:00:05Z", "--data-dir", dir)
	if err != nil || strings.Contains(at, "vm1") || !strings.Contains(at, "origin") {
		t.Errorf("at before the clones: %v\n%s", err, at)
	}
	dot, err := run(t, "tree", "--data-dir", dir, "--format", "dot")
	if err != nil || strings.Count(dot, "->") != 5 {
		t.Errorf("dot: want 5 edges: %v\n%s", err, dot)
	}
	cefOut, err := run(t, "records", "--data-dir", dir, "--format", "cef")
	if err != nil || strings.Count(cefOut, "CEF:0|vmlineage|vmlineage|") != 12 {
		t.Errorf("records --format cef: want 12 CEF lines: %v\n%.300s", err, cefOut)
	}
	ecsOut, err := run(t, "records", "--data-dir", dir, "--format", "ecs", "--activity", "clone")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(ecsOut), "\n") {
		var d struct {
			Event   struct{ Action string } `json:"event"`
			Lineage struct {
				FamilyRoot string `json:"family_root"`
			} `json:"vmlineage"`
		}
		if err := json.Unmarshal([]byte(l), &d); err != nil || d.Event.Action != "vm-clone" || d.Lineage.FamilyRoot == "" {
			t.Errorf("records --format ecs line: %v %s", err, l)
		}
	}
	svg, err := run(t, "tree", "--data-dir", dir, "--format", "svg")
	if err != nil || !strings.HasPrefix(svg, "<?xml") || !strings.Contains(svg, "vm5") {
		t.Errorf("svg: %v %.200s", err, svg)
	}
}

func TestStoreCommandsNameAMissingStore(t *testing.T) {
	_, err := run(t, "records", "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "no lineage store") {
		t.Errorf("want a clear error, got %v", err)
	}
}

func TestAgentRefusesPasswordFlagAndBadConfig(t *testing.T) {
	if _, err := run(t, "agent", "--xapi-password", "x"); err == nil {
		t.Error("there must be no --xapi-password flag")
	}
	_, err := run(t, "agent", "--xapi-url", "http://pool", "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "allow_http") {
		t.Errorf("plain HTTP must need --xapi-allow-http: %v", err)
	}
}

func TestOutputsTestSendsToEachOutput(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	out := filepath.Join(dir, "out.jsonl")
	os.WriteFile(cfg, []byte("data_dir: "+dir+"\noutputs:\n  - {name: archive, type: file, format: ecs, path: "+out+"}\n  - {name: nowhere, type: syslog, address: 127.0.0.1:1}\n"), 0o600)
	s, err := run(t, "outputs", "test", "--config", cfg)
	if err == nil || !strings.Contains(s, "archive (file): delivered") || !strings.Contains(s, "nowhere (syslog): FAILED") {
		t.Errorf("outputs test: %v\n%s", err, s)
	}
	b, _ := os.ReadFile(out)
	if !strings.Contains(string(b), "vmlineage-outputs-test") {
		t.Errorf("the file output did not get the test record: %q", b)
	}
}

// TestVerifyNamesAlteredAndDeletedRecords is issue 6's acceptance on the
// command: the demo's store verifies; with one record altered, and in a
// copy with one record deleted, `vmlineage verify` names it (exit status 3).
func TestVerifyNamesAlteredAndDeletedRecords(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	// It has failed in full-suite runs (never alone) with nothing traced:
	// on failure the goroutines say where the agent waited.
	t.Setenv("VMLINEAGE_DEMO_STACKS", "1")
	var out, errs bytes.Buffer
	if err := runDemo(context.Background(), &out, &errs, "threat-model", 0, dir, 2*time.Minute); err != nil {
		t.Fatalf("demo: %v\n%s", err, errs.String())
	}
	s, err := run(t, "verify", "--data-dir", dir)
	if err != nil || !strings.Contains(s, "store: 12 records verified") {
		t.Fatalf("an unaltered store must verify: %v\n%s", err, s)
	}
	// A JSON-lines copy of the records verifies too.
	js, err := run(t, "records", "--data-dir", dir, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	copyFile := filepath.Join(t.TempDir(), "records.jsonl")
	os.WriteFile(copyFile, []byte(js), 0o600)
	if s, err := run(t, "verify", "--file", copyFile); err != nil || !strings.Contains(s, "12 records verified") {
		t.Fatalf("verify --file: %v\n%s", err, s)
	}

	del := filepath.Join(t.TempDir(), "deleted")
	if err := os.CopyFS(del, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	victim := sqlOne(t, dir, "SELECT id FROM records WHERE chain_seq=5")
	sqlExec(t, dir, "UPDATE records SET json=json_set(json,'$.vm_name','innocent') WHERE chain_seq=5")
	_, err = run(t, "verify", "--data-dir", dir)
	if err == nil || exitCode(err) != 3 || !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), "altered") {
		t.Fatalf("altered record %s not named: %v", victim, err)
	}
	gone := sqlOne(t, del, "SELECT id FROM records WHERE chain_seq=7")
	sqlExec(t, del, "DELETE FROM records WHERE chain_seq=7")
	_, err = run(t, "verify", "--data-dir", del)
	if err == nil || exitCode(err) != 3 || !strings.Contains(err.Error(), "chain seq 7") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("deleted record %s not named: %v", gone, err)
	}
	// The copy taken before vouches against the altered store.
	_, err = run(t, "verify", "--data-dir", dir, "--checkpoints", copyFile)
	if err == nil || !strings.Contains(err.Error(), "chain seq 5") {
		t.Fatalf("the earlier copy must disagree with the altered store at seq 5: %v", err)
	}
}

func sqlDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func sqlOne(t *testing.T, dir, q string) string {
	t.Helper()
	var v string
	if err := sqlDB(t, dir).QueryRow(q).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func sqlExec(t *testing.T, dir, q string) {
	t.Helper()
	db := sqlDB(t, dir)
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
	db.Close()
}
