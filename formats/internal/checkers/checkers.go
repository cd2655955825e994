// Package checkers finds the external programs the format tests check output
// with (formats/testdata/install-deps.sh installs them). When CI=true a
// missing checker fails the test; elsewhere the test is skipped with a note.
package checkers

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func missing(t testing.TB, what string) {
	t.Helper()
	msg := what + " not found; run formats/testdata/install-deps.sh"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Lognormalizer returns the path of liblognorm's lognormalizer ($LOGNORMALIZER or PATH).
func Lognormalizer(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("LOGNORMALIZER"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("lognormalizer")
	if err != nil {
		missing(t, "lognormalizer (Debian liblognorm-utils)")
	}
	return p
}

// ECS returns node and the node_modules folder holding @elastic/ecs
// ($VMLINEAGE_ECS_DIR, default $HOME/.cache/vmlineage/ecs).
func ECS(t testing.TB) (node, modules string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node")
	}
	dir := os.Getenv("VMLINEAGE_ECS_DIR")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "vmlineage", "ecs")
	}
	modules = filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "@elastic", "ecs", "package.json")); err != nil {
		missing(t, "@elastic/ecs in "+modules)
	}
	return node, modules
}

// ValidatorScript is formats/testdata/ecs-validate.js, found from a test's
// working directory (the package folder).
func ValidatorScript(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"../testdata/ecs-validate.js", "../../testdata/ecs-validate.js", "testdata/ecs-validate.js"} {
		if _, err := os.Stat(p); err == nil {
			abs, _ := filepath.Abs(p)
			return abs
		}
	}
	t.Fatal("formats/testdata/ecs-validate.js not found")
	return ""
}
