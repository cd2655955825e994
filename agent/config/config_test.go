package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestEveryKeyIsAFlag(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	f := BindFlags(fs)
	for _, name := range []string{"data-dir", "xapi-url", "xapi-user", "xapi-password-file", "xapi-event-timeout", "xapi-allow-http", "log-level"} {
		if fs.Lookup(name) == nil {
			t.Errorf("no flag --%s", name)
		}
	}
	if fs.Lookup("xapi-password") != nil {
		t.Error("a password must never be a command-line flag")
	}
	if err := fs.Parse([]string{"--xapi-url", "https://x", "--xapi-event-timeout", "2s", "--xapi-allow-http", "--xapi-max-response-bytes", "1024"}); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	if err := f.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.XAPI.URL != "https://x" || cfg.XAPI.EventTimeout.D() != 2*time.Second || !cfg.XAPI.AllowHTTP || cfg.XAPI.MaxResponseBytes != 1024 {
		t.Errorf("flags not applied: %+v", cfg.XAPI)
	}
	if cfg.XAPI.User != "root" {
		t.Errorf("an unset flag must keep the default: %q", cfg.XAPI.User)
	}
}

func TestLoadNamesKeyAndLine(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte("data_dir: /tmp/x\nxapi:\n  url: https://a\n  bogus: 1\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown key: %v", err)
	}
	os.WriteFile(p, []byte("xapi:\n  event_timeout: soon\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad duration: %v", err)
	}
	os.WriteFile(p, []byte("xapi:\n  url: http://pool\n"), 0o600)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "allow_http") {
		t.Errorf("plain http must need allow_http: %v", err)
	}
}

func TestPasswordFromFileOrEnv(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pw")
	os.WriteFile(p, []byte("hunter2\nignored\n"), 0o600)
	x := XAPI{PasswordFile: p}
	if pw, err := x.Password(); err != nil || pw != "hunter2" {
		t.Errorf("file: %q %v", pw, err)
	}
	t.Setenv("VMLINEAGE_TEST_PW", "from-env")
	x = XAPI{PasswordEnv: "VMLINEAGE_TEST_PW"}
	if pw, err := x.Password(); err != nil || pw != "from-env" {
		t.Errorf("env: %q %v", pw, err)
	}
	x = XAPI{PasswordFile: filepath.Join(dir, "missing")}
	if _, err := x.Password(); err == nil || !strings.Contains(err.Error(), "password_file") {
		t.Errorf("missing file: %v", err)
	}
	x = XAPI{PasswordEnv: "VMLINEAGE_TEST_UNSET_VAR"}
	if _, err := x.Password(); err == nil {
		t.Error("no password at all must be an error")
	}
}
