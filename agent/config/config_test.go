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

func TestLineageBackend(t *testing.T) {
	for _, c := range []struct {
		yml, err string
	}{
		{"", ""},
		{"lineage:\n  backend: store\n", ""},
		{"lineage:\n  backend: sqlite\n", `lineage.backend: "sqlite" is not store or elasticsearch`},
		{"lineage:\n  backend: elasticsearch\n", "lineage.backend: elasticsearch needs an output of type elasticsearch"},
		{"lineage:\n  backend: store\n  output: es\n", "lineage.output: only read with lineage.backend: elasticsearch"},
		{"lineage:\n  backend: elasticsearch\noutputs:\n  - {name: es, type: elasticsearch, urls: [http://es:9200]}\n", ""},
		{"lineage:\n  backend: elasticsearch\n  output: other\noutputs:\n  - {name: es, type: elasticsearch, urls: [http://es:9200]}\n", `lineage.output: no elasticsearch output is named "other"`},
		{"lineage:\n  backend: elasticsearch\noutputs:\n  - {name: a, type: elasticsearch, urls: [http://a:9200]}\n  - {name: b, type: elasticsearch, urls: [http://b:9200]}\n", "lineage.output: 2 elasticsearch outputs; name the one"},
		{"lineage:\n  backend: elasticsearch\n  output: b\noutputs:\n  - {name: a, type: elasticsearch, urls: [http://a:9200]}\n  - {name: b, type: elasticsearch, urls: [http://b:9200]}\n", ""},
	} {
		cfg := Default()
		if err := Decode([]byte(c.yml), &cfg); err != nil {
			t.Fatalf("%q: %v", c.yml, err)
		}
		err := cfg.Validate()
		if (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%q: got %v, want %q", c.yml, err, c.err)
		}
		if c.err == "" && cfg.Lineage.Backend == LineageElasticsearch {
			if o, err := cfg.LineageOutput(); err != nil || o.Type != "elasticsearch" {
				t.Errorf("%q: lineage output %+v %v", c.yml, o, err)
			}
		}
	}
	// config check reports it on its key and line; the flags exist.
	_, ps := CheckBytes([]byte("data_dir: /tmp/x\nlineage:\n  backend: es\n"), CheckOptions{LookupEnv: noEnv})
	if p := find(ps, "lineage.backend"); p == nil || p.Line != 3 {
		t.Errorf("config check: %v", ps)
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	f := BindFlags(fs)
	if err := fs.Parse([]string{"--lineage-backend", "elasticsearch", "--lineage-output", "es"}); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	if err := f.Apply(&cfg); err != nil || cfg.Lineage.Backend != "elasticsearch" || cfg.Lineage.Output != "es" {
		t.Errorf("flags: %+v %v", cfg.Lineage, err)
	}
}

// Durations in days (alerts.retention) and bare seconds; a number with a
// stray suffix is an error, not seconds.
func TestDurationsAndAlertRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "1.5d": 36 * time.Hour, "0": 0, "45": 45 * time.Second, "2h": 2 * time.Hour, "0d": 0} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"90x", "d", "-3d", "9 d", "1e9d", "soon"} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
		}
	}
	cfg := Default()
	if cfg.Alerts.Retention.D() != 90*24*time.Hour || cfg.Alerts.MaxAlerts != 2_000_000 {
		t.Errorf("default alert retention %v, %d", cfg.Alerts.Retention.D(), cfg.Alerts.MaxAlerts)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte("alerts:\n  retention: 30d\n  max_alerts: 0\n"), 0o600)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Alerts.Retention.D() != 30*24*time.Hour || cfg.Alerts.MaxAlerts != 0 {
		t.Errorf("loaded alert retention %v, %d", cfg.Alerts.Retention.D(), cfg.Alerts.MaxAlerts)
	}
	if err := cfg.Validate(); err != nil && strings.Contains(err.Error(), "alerts.") {
		t.Errorf("30d, no count bound: %v", err)
	}
	cfg.Alerts.Retention, cfg.Alerts.MaxAlerts = Duration(10*time.Minute), -1
	err = cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "alerts.retention: 10m0s") || !strings.Contains(err.Error(), "alerts.max_alerts: -1") {
		t.Errorf("retention 10m, max_alerts -1: %v", err)
	}
}

func TestAlertsTimezone(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("alerts:\n  timezone: Europe/Berlin\n"), 0o600)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if z, err := cfg.Alerts.Zone(); err != nil || z.String() != "Europe/Berlin" {
		t.Errorf("zone %v, %v", z, err)
	}
	if z, err := Default().Alerts.Zone(); err != nil || z != time.UTC {
		t.Errorf("default zone %v, %v", z, err)
	}
	cfg.Alerts.Timezone = "Mars/Olympus_Mons"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `alerts.timezone: "Mars/Olympus_Mons" is not a time zone`) {
		t.Errorf("unknown zone: %v", err)
	}
}
