package webui

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

var apiPaths = []string{"/api/pools", "/api/hosts", "/api/tree", "/api/marks", "/api/vm/" + tmOrigin,
	"/api/at?t=2024-03-01T09:00:05Z", "/api/search?q=vm1", "/api/nothing"}

func TestCheckListen(t *testing.T) {
	const good = "0123456789abcdef0123"
	cases := []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:8080", "", true},
		{"127.0.0.2:8080", "", true},
		{"[::1]:8080", "", true},
		{"localhost:8080", "", true},
		{"0.0.0.0:8080", "", false},
		{":8080", "", false},
		{"[::]:8080", "", false},
		{"192.0.2.7:8080", "", false},
		{"example.org:8080", "", false},
		{"192.0.2.7:8080", "short", false},
		{"192.0.2.7:8080", good, true},
		{"0.0.0.0:8080", good, true},
		{"no-port", "", false},
	}
	for _, c := range cases {
		err := CheckListen(c.addr, c.token)
		if (err == nil) != c.ok {
			t.Errorf("CheckListen(%q, %q) = %v, want ok=%v", c.addr, c.token, err, c.ok)
		}
		if c.token == "" && !c.ok && c.addr != "no-port" && !errors.Is(err, ErrTokenRequired) {
			t.Errorf("CheckListen(%q) = %v, want ErrTokenRequired", c.addr, err)
		}
	}
	if _, err := Listen("0.0.0.0:0", ""); !errors.Is(err, ErrTokenRequired) {
		t.Fatalf("Listen on 0.0.0.0 without a token: %v", err)
	}
}

// TestTokenOffLoopback runs the real server on all interfaces, as
// `vmlineage serve --listen 0.0.0.0:PORT` does, and checks that every API
// endpoint answers 401 without the token, or with a wrong one.
func TestTokenOffLoopback(t *testing.T) {
	const token = "s3cret-token-for-the-test-0123456789"
	ln, err := Listen("0.0.0.0:0", token)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(threatModelStore(t), Options{Token: token})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	// Reach it through a non-loopback address of this machine when there is
	// one (that is what a remote investigator does), else through loopback.
	host := "127.0.0.1"
	if ip := nonLoopbackIP(); ip != "" {
		host = ip
	}
	base := "http://" + net.JoinHostPort(host, port)
	client := &http.Client{Timeout: 10 * time.Second}
	do := func(path, auth string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range apiPaths {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token} {
			if code, body := do(p, auth); code != http.StatusUnauthorized || strings.Contains(body, "origin") {
				t.Errorf("GET %s with %q: %d %s, want 401 and no data", p, auth, code, body)
			}
		}
		code, body := do(p, "Bearer "+token)
		want := http.StatusOK
		if p == "/api/nothing" {
			want = http.StatusNotFound
		}
		if code != want {
			t.Errorf("GET %s with the token: %d %s, want %d", p, code, body, want)
		}
	}
	// The page itself holds no data; it asks for the token when the API refuses.
	if code, body := do("/", ""); code != 200 || !strings.Contains(body, "token-dialog") {
		t.Errorf("GET / = %d", code)
	}
	if code, body := do("/api/tree", "Bearer "+token); code != 200 || !strings.Contains(body, `"name":"origin"`) {
		t.Errorf("tree with token: %d %.200s", code, body)
	}
}

func nonLoopbackIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// TestLoopbackWithoutToken: on loopback without a token the API is open, but
// only to requests naming localhost (a DNS-rebinding page names its own host).
func TestLoopbackWithoutToken(t *testing.T) {
	ts := newTestServer(t, threatModelStore(t), Options{})
	for _, host := range []string{"", "localhost:8080", "[::1]:8080", "127.0.0.1"} {
		req, _ := http.NewRequest("GET", ts.URL+"/api/pools", nil)
		if host != "" {
			req.Host = host
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Host %q: %d, want 200", host, resp.StatusCode)
		}
	}
	for _, host := range []string{"evil.example:8080", "evil.example", "192.0.2.1:8080"} {
		req, _ := http.NewRequest("GET", ts.URL+"/api/pools", nil)
		req.Host = host
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("Host %q: %d, want 403", host, resp.StatusCode)
		}
	}
}

// TestTokenOnLoopback: a token given on loopback is enforced too.
func TestTokenOnLoopback(t *testing.T) {
	ts := newTestServer(t, threatModelStore(t), Options{Token: "loopback-token-0123456789"})
	for _, p := range apiPaths {
		get(t, ts, p, "", http.StatusUnauthorized, nil)
	}
	get(t, ts, "/api/pools", "loopback-token-0123456789", 200, nil)
}

func TestSecurityHeaders(t *testing.T) {
	ts := newTestServer(t, threatModelStore(t), Options{})
	for _, p := range []string{"/", "/app.js", "/app.css", "/api/pools"} {
		resp, err := ts.Client().Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: CSP %q", p, csp)
		}
	}
}

// TestNoNetworkAssets: every script, style and image the page names is ours.
func TestNoNetworkAssets(t *testing.T) {
	for _, f := range []string{"static/index.html", "static/app.js", "static/app.css"} {
		b, err := staticFS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{"https://", "http://", "//cdn", "@import", "<script>", " style=\""} {
			if bad == "http://" && strings.Contains(s, "http://www.w3.org/2000/svg") {
				s = strings.ReplaceAll(s, "http://www.w3.org/2000/svg", "")
			}
			if strings.Contains(s, bad) {
				t.Errorf("%s contains %q: the page must work offline under its CSP", f, bad)
			}
		}
	}
}
