package formats

import (
	"testing"

	"github.com/vmlineage/vmlineage/agent/record"
)

func TestSpecOf(t *testing.T) {
	seen := map[string]bool{}
	for _, a := range record.Activities {
		got, want := SpecOf(a), specs[a]
		got.sensitive = false
		if got != want {
			t.Errorf("SpecOf(%s) = %+v, want %+v", a, got, want)
		}
		if seen[want.Action] || want.Action != "vm-"+string(a) && a != record.ConvertToTemplate {
			t.Errorf("action %q of %s is repeated or not vm-<activity>", want.Action, a)
		}
		seen[want.Action] = true
	}
	if SpecOf("no-such").Action != "vm-other" {
		t.Error("an unknown activity must map to other")
	}
}

func TestSeverity(t *testing.T) {
	for a, want := range map[record.Activity][4]int{ // success, cancelled, failure, denied
		record.Start:   {2, 3, 4, 7},
		record.Clone:   {4, 5, 6, 8},
		record.Export:  {5, 6, 7, 8},
		record.Destroy: {6, 7, 8, 8},
		record.Migrate: {3, 4, 5, 7},
	} {
		for i, res := range []record.Result{record.Success, record.Cancelled, record.Failure, record.Denied} {
			if got := Severity(a, res); got != want[i] {
				t.Errorf("Severity(%s, %s) = %d, want %d", a, res, got, want[i])
			}
		}
	}
}

func TestCheckNamespace(t *testing.T) {
	for _, ok := range []string{"default", "prod_eu1", "a"} {
		if err := CheckNamespace(ok); err != nil {
			t.Errorf("CheckNamespace(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Prod", "a-b", "a b", "a|b", "_x", string(make([]byte, 101))} {
		if CheckNamespace(bad) == nil {
			t.Errorf("CheckNamespace(%q) accepted", bad)
		}
	}
}

func TestErrorCode(t *testing.T) {
	for in, want := range map[string]string{
		"VM_BAD_POWER_STATE: [a, b]": "VM_BAD_POWER_STATE",
		"HANDLE_INVALID(VM, x)":      "HANDLE_INVALID",
		"SR_FULL":                    "SR_FULL",
		"some text":                  "",
		"AB: short":                  "",
		"VM_X-y":                     "",
	} {
		if got := ErrorCode(in); got != want {
			t.Errorf("ErrorCode(%q) = %q, want %q", in, got, want)
		}
	}
}
