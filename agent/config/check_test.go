package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const secret = "S3cr3t-hunter2-do-not-print"

func noEnv(string) (string, bool) { return "", false }

func find(ps []Problem, key string) *Problem {
	for i := range ps {
		if ps[i].Key == key {
			return &ps[i]
		}
	}
	return nil
}

func TestCheckReportsEveryProblemWithKeyAndLine(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte(secret+"\n"), 0o600)
	yml := `data_dir: /tmp/x
log:
  levl: debug
xapi:
  url: https://xen1.example.org
  password_file: ` + pwFile + `
  password: ` + secret + `
  event_timeout: ` + secret + `
  allow_http: maybe
  max_response_bytes: 512MiB
  user: [root]
`
	_, ps := CheckBytes([]byte(yml), CheckOptions{LookupEnv: noEnv})
	want := map[string]struct {
		line int
		msg  string
	}{
		"log.levl":                {3, "did you mean level?"},
		"xapi.password":           {7, "unknown key"},
		"xapi.event_timeout":      {8, "duration"},
		"xapi.allow_http":         {9, "true or false"},
		"xapi.max_response_bytes": {10, "whole number"},
		"xapi.user":               {11, "want text, found a list"},
	}
	for key, w := range want {
		p := find(ps, key)
		if p == nil {
			t.Errorf("no problem reported for %s; got %v", key, ps)
			continue
		}
		if p.Line != w.line || !strings.Contains(p.Msg, w.msg) || p.Warning {
			t.Errorf("%s: got %q (line %d), want line %d and %q", key, p, p.Line, w.line, w.msg)
		}
		if !strings.HasPrefix(p.String(), "line ") || !strings.Contains(p.String(), key) {
			t.Errorf("String() must name line and key: %q", p)
		}
	}
	for _, p := range ps {
		if strings.Contains(p.String(), secret) || strings.Contains(p.String(), "hunter2") {
			t.Errorf("secret printed: %q", p)
		}
	}
}

func TestCheckValidateAndFiles(t *testing.T) {
	dir := t.TempDir()
	unreadable := filepath.Join(dir, "nope")
	yml := "log:\n  level: loud\nxapi:\n  url: http://xen1\n  password_file: " + unreadable + "\n  ca_file: " + unreadable + "\n  fingerprint: zz\n"
	_, ps := CheckBytes([]byte(yml), CheckOptions{LookupEnv: noEnv})
	for key, line := range map[string]int{"log.level": 2, "xapi.url": 4, "xapi.password_file": 5, "xapi.ca_file": 6, "xapi.fingerprint": 7} {
		p := find(ps, key)
		if p == nil || p.Line != line || p.Warning {
			t.Errorf("%s: want an error on line %d, got %v (all: %v)", key, line, p, ps)
		}
	}
	if p := find(ps, "xapi.password_file"); p != nil && !strings.Contains(p.Msg, "no such file") {
		t.Errorf("password file problem should say why: %q", p.Msg)
	}
}

func TestCheckPasswordFilePermissionsAndEmpty(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte(secret), 0o644)
	os.Chmod(open, 0o644)
	_, ps := CheckBytes([]byte("xapi:\n  url: https://x\n  password_file: "+open+"\n"), CheckOptions{})
	if p := find(ps, "xapi.password_file"); p == nil || !p.Warning || !strings.Contains(p.Msg, "every user") || p.Line != 3 {
		t.Errorf("world-readable password file: got %v", ps)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\nsecond line\n"), 0o600)
	_, ps = CheckBytes([]byte("xapi:\n  url: https://x\n  password_file: "+empty+"\n"), CheckOptions{})
	if p := find(ps, "xapi.password_file"); p == nil || p.Warning || !strings.Contains(p.Msg, "empty") {
		t.Errorf("empty password file: got %v", ps)
	}
	if os.Geteuid() != 0 {
		locked := filepath.Join(dir, "locked")
		os.WriteFile(locked, []byte(secret), 0)
		_, ps = CheckBytes([]byte("xapi:\n  url: https://x\n  password_file: "+locked+"\n"), CheckOptions{})
		if p := find(ps, "xapi.password_file"); p == nil || !strings.Contains(p.Msg, "permission denied") {
			t.Errorf("unreadable password file: got %v", ps)
		}
	}
}

func TestCheckEnvPasswordAndConnect(t *testing.T) {
	env := func(k string) (string, bool) {
		if k == "MY_PW" {
			return secret, true
		}
		return "", false
	}
	var gotPW string
	_, ps := CheckBytes([]byte("xapi:\n  url: https://x\n  password_env: MY_PW\n"), CheckOptions{LookupEnv: env,
		Connect: func(ctx context.Context, cfg Config, pw string) []KeyError {
			gotPW = pw
			// A library that leaks the password into its error must not
			// leak it through Check.
			return []KeyError{{Key: "xapi.url", Err: errors.New("login refused for password " + pw)}}
		}})
	if gotPW != secret {
		t.Errorf("Connect got the wrong password")
	}
	p := find(ps, "xapi.url")
	if p == nil || p.Line != 2 || !strings.Contains(p.Msg, "login refused") || strings.Contains(p.Msg, secret) {
		t.Errorf("connect problem: %v", ps)
	}
	_, ps = CheckBytes([]byte("xapi:\n  url: https://x\n  password_env: MY_PW\n"), CheckOptions{LookupEnv: noEnv})
	if p := find(ps, "xapi.password_env"); p == nil || !p.Warning || p.Line != 3 {
		t.Errorf("unset env: %v", ps)
	}
}

func TestCheckCleanConfigAndSyntax(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte(secret+"\n"), 0o640)
	cfg, ps := CheckBytes([]byte("data_dir: "+dir+"\nxapi:\n  url: https://x\n  password_file: "+pwFile+"\n  event_timeout: 10s\n"), CheckOptions{})
	if len(ps) != 0 {
		t.Errorf("clean config: %v", ps)
	}
	if cfg.XAPI.EventTimeout.D().Seconds() != 10 || cfg.DataDir != dir || cfg.Log.Level != "info" {
		t.Errorf("config not decoded over defaults: %+v", cfg)
	}
	_, ps = CheckBytes([]byte("xapi:\n  url: https://x\n\tuser: root\n"), CheckOptions{})
	if len(ps) != 1 || ps[0].Line < 2 || ps[0].Line > 3 || !strings.Contains(ps[0].Msg, "YAML") { // yaml.v3 names the line of the context
		t.Errorf("syntax error: %v", ps)
	}
	_, ps = CheckBytes([]byte("xapi:\n  url: https://x\n  url: https://y\n"), CheckOptions{})
	if p := find(ps, "xapi.url"); p == nil || p.Line != 3 || !strings.Contains(p.Msg, "first on line 2") {
		t.Errorf("duplicate key: %v", ps)
	}
	_, ps = Check(filepath.Join(dir, "missing.yaml"), CheckOptions{})
	if len(ps) != 1 || !strings.Contains(ps[0].Msg, "no such file") {
		t.Errorf("missing file: %v", ps)
	}
}

// The packaged default config must pass (bar the password, which the
// operator supplies).
func TestPackagedConfigChecks(t *testing.T) {
	b, err := os.ReadFile("../../packaging/vmlineage.yaml")
	if err != nil {
		t.Fatalf("the packaged config is part of the repository: %v", err)
	}
	_, ps := CheckBytes(b, CheckOptions{LookupEnv: noEnv})
	for _, p := range ps {
		if !p.Warning && p.Key != "xapi.password_file" {
			t.Errorf("packaged config: %s", p)
		}
	}
}

func FuzzCheckBytes(f *testing.F) {
	f.Add([]byte("xapi:\n  url: https://x\n  password: " + secret + "\n"))
	f.Add([]byte("log: [1, 2]\nxapi: {event_timeout: " + secret + "}\n"))
	f.Add([]byte("a: &x {b: *x}\n"))
	f.Add([]byte("---\n---\nxapi: 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, ps := CheckBytes(b, CheckOptions{LookupEnv: noEnv})
		for _, p := range ps {
			if p.Msg == "" {
				t.Fatalf("empty message: %+v", p)
			}
			if strings.Contains(p.String(), secret) {
				t.Fatalf("secret echoed: %q", p)
			}
		}
	})
}

func TestCheckMetricsToken(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("0123456789abcdef0123\n"), 0o600)
	for _, c := range []struct{ file, want string }{
		{filepath.Join(dir, "missing"), "cannot read"},
		{short, "3 characters long; at least 16"},
		{good, ""},
	} {
		_, ps := CheckBytes([]byte("metrics:\n  listen: 0.0.0.0:9464\n  token_file: "+c.file+"\n"), CheckOptions{LookupEnv: noEnv})
		p := find(ps, "metrics.token_file")
		if c.want == "" {
			if p != nil {
				t.Errorf("%s: unexpected %v", c.file, p)
			}
			continue
		}
		if p == nil || p.Line != 3 || !strings.Contains(p.Msg, c.want) {
			t.Errorf("%s: want %q on line 3, got %v (all: %v)", c.file, c.want, p, ps)
		}
	}
}
