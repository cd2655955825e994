package xapisim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Options are the settings of `vmlineage sim`.
type Options struct {
	// Scenario is a built-in name (see BuiltinNames) or a JSON file path.
	// Ignored when Generate is set. Default "threat-model".
	Scenario string
	// Generate is "hosts=8,vms=1000,ops=10000[,seed=N]" (GenConfig).
	Generate string
	// Listen is host:port (default 127.0.0.1:8443 with TLS, 127.0.0.1:8080 without).
	Listen string
	// TLS serves HTTPS with a fresh self-signed certificate.
	TLS bool
	// Speed is virtual seconds per real second (0 = as fast as possible).
	Speed float64
	// User and the password (PasswordFile wins over Password; default xapisim).
	User, Password, PasswordFile string
	// AuthFailDelay is the wait before SESSION_AUTHENTICATION_FAILED.
	AuthFailDelay time.Duration
	// PlayDelay waits before playing, so agents can connect first.
	PlayDelay time.Duration
	// TruthFile, if set, receives the ground truth as JSON
	// {"records": [...], "tree": [...]}.
	TruthFile string
	// CertFile, if set, receives the certificate PEM (TLS only).
	CertFile string
	// Stdout receives the banner (URL, fingerprint) and progress lines.
	Stdout io.Writer
	// Ready, if set, is called with the started server.
	Ready func(*Server)
}

// ParseGenerate reads "hosts=8,vms=1000,ops=10000,seed=1".
func ParseGenerate(s string) (GenConfig, error) {
	var g GenConfig
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return g, fmt.Errorf("generate: %q is not key=value", kv)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return g, fmt.Errorf("generate: %s=%q is not a non-negative integer", k, v)
		}
		switch strings.TrimSpace(k) {
		case "hosts":
			g.Hosts = int(n)
		case "vms":
			g.VMs = int(n)
		case "ops":
			g.Ops = int(n)
		case "seed":
			g.Seed = n
		default:
			return g, fmt.Errorf("generate: unknown key %q (want hosts, vms, ops, seed)", k)
		}
	}
	if g.Hosts == 0 {
		return g, fmt.Errorf("generate: hosts must be at least 1")
	}
	return g, nil
}

// LoadAny resolves a built-in name or a file path.
func LoadAny(nameOrPath string) (*Scenario, error) {
	for _, n := range BuiltinNames() {
		if n == nameOrPath {
			return Builtin(n)
		}
	}
	f, err := os.Open(nameOrPath)
	if err != nil {
		return nil, fmt.Errorf("scenario %q is neither built in (%s) nor a readable file: %w",
			nameOrPath, strings.Join(BuiltinNames(), ", "), err)
	}
	defer f.Close()
	return LoadScenario(f)
}

// Run serves a simulated pool, plays the scenario and keeps serving until
// ctx ends.
func Run(ctx context.Context, o Options) error {
	out := o.Stdout
	if out == nil {
		out = io.Discard
	}
	var sc *Scenario
	var err error
	switch {
	case o.Generate != "":
		g, err := ParseGenerate(o.Generate)
		if err != nil {
			return err
		}
		sc = Generate(g)
	default:
		name := o.Scenario
		if name == "" {
			name = "threat-model"
		}
		if sc, err = LoadAny(name); err != nil {
			return err
		}
	}
	pass := o.Password
	if o.PasswordFile != "" {
		b, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return fmt.Errorf("password file: %w", err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	listen := o.Listen
	if listen == "" {
		listen = "127.0.0.1:8080"
		if o.TLS {
			listen = "127.0.0.1:8443"
		}
	}
	if o.TruthFile != "" {
		recs, tree := sc.GroundTruth()
		b, _ := json.MarshalIndent(map[string]any{"records": recs, "tree": tree}, "", "  ")
		if err := os.WriteFile(o.TruthFile, b, 0o644); err != nil {
			return fmt.Errorf("truth file: %w", err)
		}
	}
	s := New(Config{Scenario: sc, Listen: listen, TLS: o.TLS, User: o.User, Password: pass,
		AuthFailDelay: o.AuthFailDelay})
	if err := s.Start(); err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(out, "xapisim: scenario %s (%d hosts, %d VMs, %d steps), speed %g\n",
		sc.Name, len(sc.Hosts), len(sc.VMs), len(sc.Steps), o.Speed)
	fmt.Fprintf(out, "xapisim: url %s user %s pool %s\n", s.URL(), s.cfg.User, s.PoolUUID())
	if o.TLS {
		fmt.Fprintf(out, "xapisim: sha256 fingerprint %s\n", s.CertFingerprint())
		if o.CertFile != "" {
			if err := os.WriteFile(o.CertFile, s.CertPEM(), 0o644); err != nil {
				return fmt.Errorf("cert file: %w", err)
			}
		}
	}
	if o.Ready != nil {
		o.Ready(s)
	}
	if o.PlayDelay > 0 {
		select {
		case <-time.After(o.PlayDelay):
		case <-ctx.Done():
			return nil
		}
	}
	if err := s.Play(ctx, sc, o.Speed); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	fmt.Fprintf(out, "xapisim: scenario played; still serving until stopped\n")
	<-ctx.Done()
	return nil
}
