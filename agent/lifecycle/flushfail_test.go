package lifecycle

import (
	"context"
	"testing"

	"github.com/vmlineage/vmlineage/agent/xapi"
)

// TestFailedFlushKeepsItsRecords: a group commit that fails (a store
// error; a cancelled context stands for it) keeps what it was to write,
// and the watcher's retry of the same batch then stores the record, which
// the batch alone would not make again (its task is marked recorded).
func TestFailedFlushKeepsItsRecords(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a-uuid", NameLabel: "a", PowerState: "Halted"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "00000000000000000001,00000000000000000000", "start"); err != nil {
		t.Fatal(err)
	}
	p.power(1, "OpaqueRef:a", "start", "Running", "OpaqueRef:h1", 5, false)
	b := p.flush()
	again := *b
	again.Events = append([]xapi.Event(nil), b.Events...)
	if err := tr.Events(ctx, b); err != nil {
		t.Fatal(err)
	}
	bad, cancel := context.WithCancel(ctx)
	cancel()
	if err := tr.Flush(bad); err == nil {
		t.Fatal("expected the write to fail")
	}
	if err := feed(ctx, tr, &again); err != nil {
		t.Fatal(err)
	}
	got := recordLines(st)
	for _, l := range got {
		if l == "start success of a-uuid (xapi)" {
			return
		}
	}
	t.Fatalf("the VM.start record was lost after one failed store write; records %v", got)
}
