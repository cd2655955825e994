package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// storeWith is a data dir whose store fn filled.
func storeWith(t *testing.T, fn func(tx *lineage.Tx) error) string {
	t.Helper()
	dir := t.TempDir()
	st, err := lineage.Open(filepath.Join(dir, "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
	st.Close()
	return dir
}

// TestRecordsOfReplayedVM: `vmlineage replay` stores records and no tree;
// records --vm finds such a VM by uuid and by the name its records give.
func TestRecordsOfReplayedVM(t *testing.T) {
	t0 := time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	const u = "11111111-0000-4000-8000-000000000001"
	dir := storeWith(t, func(tx *lineage.Tx) error {
		for i, id := range []string{"0000000000aa", "0000000000ab"} {
			r := &record.Record{ID: record.ID("p", id, 0), PoolUUID: "p", VMUUID: u, VMName: "old",
				Activity: record.Start, Start: t0.Add(time.Duration(i) * time.Hour), End: t0.Add(time.Duration(i)*time.Hour + time.Second),
				Result: record.Success, Source: record.SourceLog}
			if _, err := tx.PutRecord(r); err != nil {
				return err
			}
		}
		return nil
	})
	for _, by := range []string{u, "old"} {
		out, err := run(t, "records", "--data-dir", dir, "--vm", by)
		if err != nil {
			t.Fatalf("records --vm %s: %v", by, err)
		}
		if n := strings.Count(out, "start"); n != 2 {
			t.Errorf("records --vm %s: %d start records, want 2:\n%s", by, n, out)
		}
	}
	if _, err := run(t, "records", "--data-dir", dir, "--vm", "nosuch"); err == nil || !strings.Contains(err.Error(), "no VM named") {
		t.Errorf("records --vm nosuch: %v, want no VM named", err)
	}
}

// TestVerifyRefusesUnknownFormat: a typo in --format is an error, not an
// empty output and exit 0 that a script takes for a clean check.
func TestVerifyRefusesUnknownFormat(t *testing.T) {
	dir := storeWith(t, func(tx *lineage.Tx) error { return nil })
	out, err := run(t, "verify", "--data-dir", dir, "--format", "jsno")
	if err == nil || !strings.Contains(err.Error(), "jsno") {
		t.Errorf("verify --format jsno: error %v, output %q; want an error naming jsno", err, out)
	}
}
