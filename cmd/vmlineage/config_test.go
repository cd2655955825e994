package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

const testSecret = "Pa55-w0rd-never-in-output"

func runCmd(t *testing.T, c *cobra.Command, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	err := c.ExecuteContext(ctx)
	return out.String(), err
}

func startSim(t *testing.T, password string) *xapisim.Server {
	t.Helper()
	sc, err := xapisim.Builtin("threat-model")
	if err != nil {
		t.Fatal(err)
	}
	srv := xapisim.New(xapisim.Config{Scenario: sc, TLS: true, Password: password})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func writeFile(t *testing.T, dir, name, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigCheckCommand(t *testing.T) {
	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", testSecret+"\n", 0o600)
	bad := writeFile(t, dir, "bad.yaml", "xapi:\n  url: https://x\n  password_file: "+pw+"\n  password: "+testSecret+"\n  event_timeout: soon\n", 0o600)
	out, err := runCmd(t, newConfigCheckCmd(), context.Background(), bad)
	if err == nil {
		t.Fatalf("bad config accepted:\n%s", out)
	}
	for _, want := range []string{bad + ": line 4: xapi.password: unknown key", bad + ": line 5: xapi.event_timeout: want a duration"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+err.Error(), testSecret) {
		t.Errorf("secret printed:\n%s", out)
	}

	// --connect against the simulator: right password OK, wrong one named
	// on xapi.url, and neither password printed.
	sim := startSim(t, testSecret)
	good := writeFile(t, dir, "good.yaml", "data_dir: "+dir+"\nxapi:\n  url: "+sim.URL()+"\n  fingerprint: "+sim.CertFingerprint()+"\n  password_file: "+pw+"\n", 0o600)
	out, err = runCmd(t, newConfigCheckCmd(), context.Background(), "--connect", good)
	if err != nil || !strings.Contains(out, "OK, XAPI login succeeded") {
		t.Fatalf("good config: %v\n%s", err, out)
	}
	wrongPW := writeFile(t, dir, "wrong", "wrong-"+testSecret+"\n", 0o600)
	wrong := writeFile(t, dir, "wrong.yaml", "xapi:\n  url: "+sim.URL()+"\n  fingerprint: "+sim.CertFingerprint()+"\n  password_file: "+wrongPW+"\n", 0o600)
	out, err = runCmd(t, newConfigCheckCmd(), context.Background(), "--connect", wrong)
	if err == nil || !strings.Contains(out, "line 2: xapi.url: XAPI login") {
		t.Fatalf("wrong password not reported on xapi.url: %v\n%s", err, out)
	}
	if strings.Contains(out, testSecret) {
		t.Errorf("secret printed:\n%s", out)
	}
}

// The agent's own logs, at debug level, never hold the password: neither
// when it logs in nor when the login is refused.
func TestAgentLogsHoldNoSecret(t *testing.T) {
	sim := startSim(t, testSecret)
	for _, tc := range []struct{ name, pw string }{{"right", testSecret}, {"wrong", "wrong-" + testSecret}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pw := writeFile(t, dir, "pw", tc.pw+"\n", 0o600)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			out, _ := runCmd(t, newAgentCmd(), ctx, "--data-dir", dir, "--log-level", "debug", "--log-format", "json",
				"--xapi-url", sim.URL(), "--xapi-fingerprint", sim.CertFingerprint(), "--xapi-password-file", pw)
			if !strings.Contains(out, "vmlineage agent starting") {
				t.Fatalf("agent did not start:\n%s", out)
			}
			if strings.Contains(out, testSecret) {
				t.Errorf("password in the agent's logs:\n%s", out)
			}
		})
	}
}

func TestVersionCommand(t *testing.T) {
	out, err := runCmd(t, newVersionCmd(), context.Background())
	if err != nil || !strings.HasPrefix(out, "vmlineage "+version+"\n") || !strings.Contains(out, "go: go1.") {
		t.Errorf("version: %v %q", err, out)
	}
	out, _ = runCmd(t, newVersionCmd(), context.Background(), "--short")
	if out != version+"\n" {
		t.Errorf("version --short: %q", out)
	}
}
