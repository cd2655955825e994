package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkErrors is config check's errors (not warnings) for yml.
func checkErrors(t *testing.T, yml string, env map[string]string) []Problem {
	t.Helper()
	_, ps := CheckBytes([]byte(yml), CheckOptions{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	var errs []Problem
	for _, p := range ps {
		if !p.Warning {
			errs = append(errs, p)
		}
	}
	return errs
}

// TLS settings on a syslog output that is not network: tls would be
// ignored (records in clear, no pin checked): refused.
func TestSyslogTLSKeysNeedNetworkTLS(t *testing.T) {
	const base = "xapi: {url: https://xen1.example.org, password_env: P}\noutputs:\n  - {name: siem, type: syslog, address: 'siem:6514', fingerprint: 'aa', %s}\n"
	errs := checkErrors(t, strings.Replace(base, "%s", "network: tcp", 1), map[string]string{"P": "x"})
	if len(errs) == 0 || !strings.Contains(errs[0].Msg, "network: tls") {
		t.Errorf("fingerprint on a tcp syslog output: %v, want an error asking for network: tls", errs)
	}
	for _, e := range checkErrors(t, strings.Replace(base, "%s", "network: tls", 1), map[string]string{"P": "x"}) {
		if strings.Contains(e.Msg, "network: tls") {
			t.Errorf("with network: tls: %v", e)
		}
	}
}

// An elasticsearch output on plain http:// with a pin, or with credentials
// and no allow_http, is refused; config check reads its secret files.
func TestElasticsearchPlainHTTP(t *testing.T) {
	env := map[string]string{"P": "x"}
	head := "xapi: {url: https://xen1.example.org, password_env: P}\noutputs:\n  - {name: es, type: elasticsearch, urls: ['http://es1:9200'], "
	for yml, want := range map[string]string{
		head + "fingerprint: 'aa'}\n":                                             "ca_file and fingerprint do nothing",
		head + "username: u, password_file: /nonexistent/pw}\n":                   "in clear",
		head + "username: u, password_file: /nonexistent/pw, allow_http: true}\n": "cannot read",
	} {
		errs := checkErrors(t, yml, env)
		found := false
		for _, e := range errs {
			found = found || strings.Contains(e.Msg, want)
		}
		if !found {
			t.Errorf("%s: errors %v, want one saying %q", yml, errs, want)
		}
	}
	if errs := checkErrors(t, head+"}\n", env); len(errs) != 0 {
		t.Errorf("plain http without credentials or TLS settings (a lab VictoriaLogs): %v", errs)
	}
}

// config check fails where the agent would refuse the web view.
func TestCheckWebViewToken(t *testing.T) {
	const x = "xapi: {url: https://xen1.example.org, password_env: P}\n"
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	for _, yml := range []string{
		x + "webui: {listen: '0.0.0.0:8080'}\n",
		x + "webui: {listen: '0.0.0.0:8080', token_file: /nonexistent/ui.token}\n",
		x + "webui: {listen: '0.0.0.0:8080', token_file: " + short + "}\n",
	} {
		if errs := checkErrors(t, yml, map[string]string{"P": "x"}); len(errs) == 0 {
			t.Errorf("config check passes for a web view the agent refuses:\n%s", yml)
		}
	}
	ok := map[string]string{"P": "x", "VMLINEAGE_TOKEN": "0123456789abcdef0123"}
	for _, yml := range []string{x + "webui: {listen: '127.0.0.1:8080'}\n", x + "webui: {listen: '0.0.0.0:8080'}\n"} {
		if errs := checkErrors(t, yml, ok); len(errs) != 0 {
			t.Errorf("%s: %v", yml, errs)
		}
	}
}

// The agent refuses a second YAML document rather than ignore it.
func TestLoadRefusesSecondDocument(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("xapi: {url: https://xen1.example.org}\n---\nxapi: {fingerprint: \"00\"}\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "more than one YAML document") {
		t.Fatalf("Load of two documents: %v", err)
	}
}
