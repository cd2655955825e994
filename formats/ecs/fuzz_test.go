package ecs

import (
	"testing"

	"github.com/vmlineage/vmlineage/formats/internal/fixtures"
)

// FuzzAppendRecord: whatever the strings, the document is valid JSON, holds
// no raw control or bidi character, and decodes to the cleaned values.
func FuzzAppendRecord(f *testing.F) {
	for _, h := range fixtures.Hostile {
		f.Add(h, h, h, h)
	}
	f.Add("web-01", "xen1", "VM_BAD_POWER_STATE: x", "192.0.2.1")
	f.Fuzz(func(t *testing.T, vm, host, errText, addr string) {
		tc := fixtures.Base()
		tc.R.Actor = nil // the context's actor only
		tc.R.VMName, tc.R.HostName, tc.R.Error, tc.R.Operation = vm, host, errText, addr
		tc.C.PoolName, tc.C.ActorName, tc.C.FamilyRoot, tc.C.Namespace = host, vm, errText, addr
		tc.C.VMIPs, tc.C.HostIP, tc.C.ActorAddress, tc.C.VMMACs = []string{addr, vm}, addr, host, []string{addr}
		tc.C.AncestorPath = []string{vm, host}
		tc.R.Unknown = []string{errText}
		doc := decode(t, AppendRecord(nil, &tc.R, &tc.C))
		name := vm
		if name == "" {
			name = tc.R.VMUUID
		}
		for k, want := range map[string]string{
			"host.name": clean(name), "observer.hostname": clean(host), "error.message": clean(errText),
			"xen.operation": clean(addr), "orchestrator.cluster.name": clean(host), "user.name": clean(vm),
			"vmlineage.family_root": clean(errText),
		} {
			got, _ := get(doc, k).(string)
			if got != want {
				t.Fatalf("%s = %q, want %q", k, got, want)
			}
		}
		if v, ok := get(doc, "host.ip").([]any); ok {
			for _, ip := range v {
				if !validIP(ip.(string)) {
					t.Fatalf("host.ip holds %q", ip)
				}
			}
		}
	})
}
