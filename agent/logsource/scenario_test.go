package logsource_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

// documentedUnknown reads the "What logs cannot reveal" table of this
// package's README: the fields the test may leave out.
func documentedUnknown(t *testing.T) map[string]bool {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "## What the logs cannot reveal")
	if !ok {
		t.Fatal("README.md has no \"## What the logs cannot reveal\" section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)`").FindAllStringSubmatch(sec, -1) {
		out[m[1]] = true
	}
	return out
}

// TestScenariosFromLogs plays every simulator scenario, takes the
// xensource.log lines each host would have written, replays them through
// the log source into an empty store and compares with the XAPI ground
// truth in every field the logs carry.
func TestScenariosFromLogs(t *testing.T) {
	doc := documentedUnknown(t)
	seen := map[string]bool{}
	for _, name := range xapisim.BuiltinNames() {
		t.Run(name, func(t *testing.T) {
			sc, err := xapisim.Builtin(name)
			if err != nil {
				t.Fatal(err)
			}
			srv := xapisim.New(xapisim.Config{Scenario: sc})
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			ctx := context.Background()
			if err := srv.Play(ctx, sc, 0); err != nil {
				t.Fatal(err)
			}
			truth, _ := srv.Truth()
			dir := t.TempDir()
			files := writeHostFiles(t, dir, srv.HostLogLines())
			st := openStore(t, t.TempDir())
			e := newTestEngine(t, st, deriverConfig(srv), logsource.Active)
			// Each file names its host by its directory.
			hostOf := func(f string) string { return filepath.Base(filepath.Dir(f)) }
			if _, err := logsource.Replay(ctx, e, logsource.ReplayConfig{Files: files, HostOf: hostOf}); err != nil {
				t.Fatal(err)
			}
			if s := e.Stats(); s.Bad != 0 || s.Overlong != 0 {
				t.Errorf("bad lines: %+v", s)
			}
			unknown := compare(t, logTruth(truth), storedRecords(t, st))
			var names []string
			for f, n := range unknown {
				seen[f] = true
				names = append(names, f+"="+itoa(n))
				if !doc[f] {
					t.Errorf("field %s is left unknown (%d records) but README.md's table does not list it", f, n)
				}
			}
			sort.Strings(names)
			t.Logf("%d truth records; unknown fields: %s", len(truth), strings.Join(names, " "))
		})
	}
	for f := range doc {
		if !seen[f] {
			t.Logf("README lists %s, which no scenario left unknown", f)
		}
	}
}

func itoa(n int) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{digits[n%10]}, b...)
		n /= 10
	}
	return string(b)
}
