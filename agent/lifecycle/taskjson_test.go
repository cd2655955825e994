package lifecycle

import (
	"encoding/json"
	"testing"
	"time"
)

func checkTaskJSON(t *testing.T, tk *taskInfo) {
	t.Helper()
	want, err := json.Marshal(tk)
	if err != nil {
		t.Fatal(err)
	}
	if got := tk.appendJSON(nil); string(got) != string(want) {
		t.Fatalf("appendJSON\n got %s\nwant %s", got, want)
	}
}

func TestTaskJSON(t *testing.T) {
	checkTaskJSON(t, &taskInfo{Ref: "OpaqueRef:x"})
	at := time.Date(2024, 3, 1, 9, 0, 0, 123456789, time.UTC)
	checkTaskJSON(t, &taskInfo{Ref: "OpaqueRef:x", UUID: "u", Name: "Async.VM.clone", Status: "success", Created: at,
		Finished: at.Add(time.Second), FirstSeen: at.In(time.FixedZone("x", 3600)), GoneAt: at, Result: "<value>OpaqueRef:a</value>",
		ErrorInfo: []string{"VM_BAD_POWER_STATE", "a\"b\\c\n\t\u2028é\x01"}, SubtaskOf: "OpaqueRef:p", Resident: "h",
		VMs: map[string]string{"OpaqueRef:b": "clone", "OpaqueRef:a": "clone"}, VMUUIDs: map[string]string{"z": "x", "a": "&<>"},
		NewVMs: []string{"OpaqueRef:n"}, SrcHost: "s", Seen: true, Done: true, Gone: true, Recorded: true})
}

// FuzzTaskJSON: any strings encode as encoding/json encodes them.
func FuzzTaskJSON(f *testing.F) {
	f.Add("OpaqueRef:x", "VM.start", "<value>\xff</value>", "k", "v")
	f.Fuzz(func(t *testing.T, ref, name, result, k, v string) {
		checkTaskJSON(t, &taskInfo{Ref: ref, Name: name, Result: result, ErrorInfo: []string{name, v},
			VMs: map[string]string{k: v, v: k}, NewVMs: []string{k}})
	})
}
