package ecs

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/formats"
	"github.com/vmlineage/vmlineage/formats/internal/checkers"
)

func sampleCheckpoint() *formats.Checkpoint {
	return &formats.Checkpoint{Seq: 1234, Hash: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
		At: time.Date(2026, 11, 25, 10, 5, 0, 0, time.UTC), Reason: "periodic", PoolUUID: "8d6e3c1a-0f3a-4b6e-9d1c-3a5b7c9d0e1f"}
}

func TestCheckpointDocument(t *testing.T) {
	cp := sampleCheckpoint()
	doc := decode(t, AppendCheckpoint(nil, cp, &formats.Context{AgentName: "mgmt1", PoolName: "lab"}))
	for k, want := range map[string]any{
		"event.kind": "state", "event.action": "chain.checkpoint", "event.id": "chain-1234-60303ae22b998861",
		"vmlineage.checkpoint.hash": cp.Hash, "event.reason": "periodic", "@timestamp": "2026-11-25T10:05:00.000Z",
		"orchestrator.cluster.id": cp.PoolUUID, "data_stream.dataset": "vmlineage.lifecycle",
	} {
		if got := get(doc, k); got != want {
			t.Errorf("%s = %#v, want %#v", k, got, want)
		}
	}
	if got := get(doc, "vmlineage.checkpoint.seq"); got == nil || got.(interface{ String() string }).String() != "1234" {
		t.Errorf("vmlineage.checkpoint.seq = %#v", got)
	}
}

func TestCheckpointValidatesWithElasticECS(t *testing.T) {
	node, modules := checkers.ECS(t)
	script := checkers.ValidatorScript(t)
	var all bytes.Buffer
	all.Write(AppendCheckpoint(nil, sampleCheckpoint(), &formats.Context{AgentName: "mgmt1", AgentVersion: "1", PoolName: "lab"}))
	all.WriteByte('\n')
	all.Write(AppendCheckpoint(nil, &formats.Checkpoint{At: time.Unix(0, 0), Hash: "x"}, nil))
	all.WriteByte('\n')
	cmd := exec.Command(node, script, "--custom", "xen", "--custom", "vmlineage")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stdin = &all
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 passed, 0 failed") || strings.Contains(string(out), "WARN") {
		t.Fatalf("validator: %v\n%s", err, out)
	}
}
