// Package plugintest builds detector binaries for tests and pins them. Each
// binary is built once per test process (go build caches the rest), into a
// directory removed by Main.
package plugintest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"sync"
	"testing"

	"github.com/vmlineage/vmlineage/plugins"
)

var (
	mu      sync.Mutex
	dir     string
	builds  = map[string]string{}
	viaMain bool // without Main nothing would remove a shared directory
)

// Main runs the tests and removes the built binaries; call it from TestMain.
func Main(m *testing.M) {
	mu.Lock()
	viaMain = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	if dir != "" {
		os.RemoveAll(dir)
	}
	mu.Unlock()
	os.Exit(code)
}

// Build compiles the main package pkg (an import path) with the given
// -ldflags and returns the binary's path. Builds are shared within the test
// process when the package's TestMain calls Main, else made per test.
func Build(t testing.TB, pkg, ldflags string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	key := pkg + "|" + ldflags
	if p, ok := builds[key]; ok {
		return p
	}
	if !viaMain {
		return build(t, t.TempDir(), pkg, ldflags, 0)
	}
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "vmlineage-detectors-"); err != nil {
			t.Fatal(err)
		}
	}
	out := build(t, dir, pkg, ldflags, len(builds))
	builds[key] = out
	return out
}

func build(t testing.TB, dir, pkg, ldflags string, n int) string {
	out := filepath.Join(dir, fmt.Sprintf("bin%d-%s", n, filepath.Base(pkg)))
	args := []string{"build", "-o", out}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.Command("go", append(args, pkg)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Install copies the binary into dir under name and returns its pin.
func Install(t testing.TB, bin, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum, err := plugins.FileSHA256(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// Detector is a detector to install: the package to build, and the mode for
// plugins/internal/testdetector ("" for a real detector).
type Detector struct {
	Name, Pkg, Mode string
}

// TestDetector is the import path of the misbehaving test detector.
const TestDetector = "github.com/vmlineage/vmlineage/plugins/internal/testdetector"

// Setup builds and installs the detectors into a fresh directory and
// returns it with the pins.
func Setup(t testing.TB, dets ...Detector) (string, map[string]string) {
	t.Helper()
	d := t.TempDir()
	pins := map[string]string{}
	for _, x := range dets {
		ld := ""
		if x.Mode != "" {
			ld = "-X main.mode=" + x.Mode
		}
		pins[x.Name] = Install(t, Build(t, x.Pkg, ld), d, x.Name)
	}
	return d, pins
}

// Shipped maps the shipped detectors to their packages.
var Shipped = map[string]string{
	"lineage-suspects": "github.com/vmlineage/vmlineage/detectors/lineage-suspects",
	"rollback":         "github.com/vmlineage/vmlineage/detectors/rollback",
	"shadow-copy":      "github.com/vmlineage/vmlineage/detectors/shadow-copy",
	"example":          "github.com/vmlineage/vmlineage/detectors/example",
}

// ShippedDetectors lists the shipped detectors, optionally only some.
func ShippedDetectors(names ...string) []Detector {
	if len(names) == 0 {
		names = []string{"example", "lineage-suspects", "rollback", "shadow-copy"}
	}
	var out []Detector
	for _, n := range names {
		out = append(out, Detector{Name: n, Pkg: Shipped[n]})
	}
	return out
}

// Flags renders pins as --pin flags (for CLI tests).
func Flags(pins map[string]string) []string {
	var out []string
	for n, s := range pins {
		out = append(out, "--pin", n+"="+s)
	}
	return out
}
