package cef

import (
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/formats"
)

func TestCheckpointLineParsesBack(t *testing.T) {
	cp := &formats.Checkpoint{Seq: 77, Hash: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
		At: time.Date(2026, 11, 25, 10, 5, 0, 0, time.UTC), Reason: "shutdown", PoolUUID: "pool-1"}
	line := AppendCheckpoint(nil, cp, &formats.Context{AgentVersion: "1.2"})
	ev, err := Parse(string(line))
	if err != nil {
		t.Fatalf("%v\n%s", err, line)
	}
	if ev.SignatureID != "chain.checkpoint" || ev.Severity != "1" || ev.DeviceVersion != "1.2" {
		t.Errorf("header: %+v", ev)
	}
	for label, want := range map[string]string{"chainSeq": "77", "chainHash": cp.Hash, "poolUuid": "pool-1"} {
		if got, _ := ev.Custom(label); got != want {
			t.Errorf("%s = %q, want %q", label, got, want)
		}
	}
	if got, _ := ev.Get("externalId"); got != "chain-77-60303ae22b998861" {
		t.Errorf("externalId %q", got)
	}
	if got, _ := ev.Get("reason"); got != "shutdown" {
		t.Errorf("reason %q", got)
	}
}
