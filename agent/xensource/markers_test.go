package xensource

import (
	"reflect"
	"testing"
)

// Audit lines as message_forwarding.ml prints them, quirks included.
func TestParseAudit(t *testing.T) {
	cases := []struct {
		msg  string
		want auditFields
	}{
		{"VM.clone: VM = '2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d (web 01)'; new_name = 'web 02'",
			auditFields{op: "clone", vmUUID: "2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d", vmName: "web 01", newName: "web 02", hasNewName: true}},
		{"VM.checkpoint: VM = '2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d'; new_name=' cp1'",
			auditFields{op: "checkpoint", vmUUID: "2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d", newName: "cp1", hasNewName: true}},
		{"VM.start_on: VM = '2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d (a)'; host '11111111-1111-4111-8111-111111111111 (xen1)'",
			auditFields{op: "start_on", vmUUID: "2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d", vmName: "a", hostUUID: "11111111-1111-4111-8111-111111111111", hostName: "xen1"}},
		{"VM.pool_migrate: VM = '2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d (it's; mine)'; host = '11111111-1111-4111-8111-111111111111 (xen1)'",
			auditFields{op: "pool_migrate", vmUUID: "2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d", vmName: "it's; mine", hostUUID: "11111111-1111-4111-8111-111111111111", hostName: "xen1"}},
		{"VM.revert: snapshot = '2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d (snap)'",
			auditFields{op: "revert", vmUUID: "2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d", vmName: "snap"}},
		{"VM.create: name_label = 'new vm' name_description = 'd'",
			auditFields{op: "create", newName: "new vm", hasNewName: true}},
		// A member prints an OpaqueRef: no uuid is taken.
		{"VM.start: VM = 'OpaqueRef:8b8a1b91-4f63-4cd5-b59d-fa67df61a56c'", auditFields{op: "start"}},
	}
	for _, c := range cases {
		got, ok := parseAudit(c.msg)
		if !ok || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v (%v)\nwant %+v", c.msg, got, ok, c.want)
		}
	}
	for _, bad := range []string{"VM.set_ha_always_run: VM = 'x'; value = 'true'", "VBD.create: VM = 'x'", "VM.", "garbage"} {
		if _, ok := parseAudit(bad); ok {
			t.Errorf("%q: not a lifecycle audit line", bad)
		}
	}
}

func TestParseFailure(t *testing.T) {
	f, ok := parseFailure("Async.VM.start R:6155c3fcfe29 failed with exception Server_error(HOST_NOT_ENOUGH_FREE_MEMORY, [ 8663330816; 4300062720 ])")
	if !ok || f.shortID != "6155c3fcfe29" || f.taskName != "Async.VM.start" || f.code != "HOST_NOT_ENOUGH_FREE_MEMORY" ||
		!reflect.DeepEqual(f.params, []string{"8663330816", "4300062720"}) {
		t.Fatalf("%+v %v", f, ok)
	}
	if got := FormatError(f.code, f.params); got != "HOST_NOT_ENOUGH_FREE_MEMORY: 8663330816, 4300062720" {
		t.Fatal(got)
	}
	f, ok = parseFailure("VM.destroy R:000000000001 failed with exception Server_error(HANDLE_INVALID, [  ])")
	if !ok || f.code != "HANDLE_INVALID" || len(f.params) != 0 {
		t.Fatalf("%+v", f)
	}
	f, ok = parseFailure(`Async.VM.start R:6155c3fcfe29 failed with exception Xenops_interface.Xenopsd_error([S(Does_not_exist);[S(VM);S(x)]])`)
	if !ok || FormatError(f.code, f.params) != `INTERNAL_ERROR: Xenops_interface.Xenopsd_error([S(Does_not_exist);[S(VM);S(x)]])` {
		t.Fatalf("%+v", f)
	}
	if _, ok := parseFailure(`Xapi.watchdog failed with exception Xmlm.Error(1:1, "expected root element")`); ok {
		t.Fatal("a failure without R: id is not a task failure")
	}
}
