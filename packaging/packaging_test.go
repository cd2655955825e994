// Package packaging holds the package definitions (nfpm), the systemd unit,
// the default configuration and the maintainer scripts; packaging/build.sh
// builds the .deb and .rpm and scripts/package-test.sh is the install test.
// This file checks the definitions without building.
package packaging

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/vmlineage/vmlineage/agent/config"
)

// The hardening the issue asks for, and what the reference scores 1.4 "OK".
func TestUnitHardening(t *testing.T) {
	b, err := os.ReadFile("systemd/vmlineage.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, d := range []string{"User=vmlineage", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
		"PrivateTmp=yes", "StateDirectory=vmlineage", "\nCapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
		"SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes", "ExecStart=/usr/bin/vmlineage agent --config /etc/vmlineage/vmlineage.yaml"} {
		if !strings.Contains(unit, d) {
			t.Errorf("unit lacks %q", strings.TrimSpace(d))
		}
	}
	if strings.Contains(unit, "PASSWORD=") {
		t.Error("the unit must not hold a password")
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze not found and CI=true")
		}
		t.Skip("systemd-analyze not found: skipping the security score")
	}
	out, err := exec.Command(sa, "security", "--offline=yes", "systemd/vmlineage.service").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	last := strings.TrimSpace(string(out))
	last = last[strings.LastIndex(last, "\n")+1:]
	t.Log(last)
	if !strings.Contains(last, " OK ") && !strings.Contains(last, "SAFE") {
		t.Errorf("exposure not OK: %s", last)
	}
}

type nfpmFile struct {
	Contents []struct {
		Src, Dst, Type string
		FileInfo       struct {
			Mode int
		} `yaml:"file_info"`
	}
}

func TestNfpmContents(t *testing.T) {
	b, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var n nfpmFile
	if err := yaml.Unmarshal(b, &n); err != nil {
		t.Fatal(err)
	}
	dst := map[string]int{}
	for i, c := range n.Contents {
		dst[c.Dst] = i
		if c.Src != "" && !strings.HasPrefix(c.Src, "dist/stage/") {
			if _, err := os.Stat("../" + c.Src); err != nil {
				t.Errorf("%s: source %s missing", c.Dst, c.Src)
			}
		}
	}
	for _, d := range []string{"/usr/bin/vmlineage", "/usr/lib/vmlineage/detectors/", "/etc/vmlineage/vmlineage.yaml",
		"/usr/lib/systemd/system/vmlineage.service", "/usr/share/vmlineage/kibana/vmlineage.ndjson",
		"/usr/share/vmlineage/elasticsearch/index-template.json", "/usr/share/man/man1/vmlineage.1.gz",
		"/usr/share/doc/vmlineage/copyright"} {
		if _, ok := dst[d]; !ok {
			t.Errorf("package lacks %s", d)
		}
	}
	if i, ok := dst["/etc/vmlineage/vmlineage.yaml"]; ok {
		c := n.Contents[i]
		if c.Type != "config|noreplace" || c.FileInfo.Mode != 0o640 {
			t.Errorf("config: type %q mode %o, want config|noreplace 0640", c.Type, c.FileInfo.Mode)
		}
	}
}

// The default config decodes with the agent's own loader (unknown keys are
// errors) once the build has put the pins in.
func TestDefaultConfigLoads(t *testing.T) {
	b, err := os.ReadFile("vmlineage.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	if err := config.Decode(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/var/lib/vmlineage" {
		t.Errorf("data_dir %q", cfg.DataDir)
	}
	if !strings.Contains(string(b), "\n#@DETECTOR_PINS@\n") {
		t.Error("the pins placeholder build.sh replaces is gone")
	}
}
