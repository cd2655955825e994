package xapisim

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRunServesPlaysAndWritesTruth(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	truth := filepath.Join(dir, "truth.json")
	var out lockedBuf
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *Server, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, Options{Generate: "hosts=3,vms=20,ops=40,seed=5", Listen: "127.0.0.1:0", TLS: true,
			PasswordFile: pw, TruthFile: truth, Stdout: &out, Ready: func(s *Server) { ready <- s }})
	}()
	var s *Server
	select {
	case s = <-ready:
	case err := <-errc:
		t.Fatal(err)
	}
	waitFor(t, "scenario played", func() bool { return strings.Contains(out.String(), "scenario played") })
	o := out.String()
	if !strings.Contains(o, s.URL()) || !strings.Contains(o, s.CertFingerprint()) {
		t.Fatalf("banner: %s", o)
	}
	b, err := os.ReadFile(truth)
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		Records []json.RawMessage `json:"records"`
		Tree    []TreeVM          `json:"tree"`
	}
	if err := json.Unmarshal(b, &tr); err != nil || len(tr.Records) < 30 || len(tr.Tree) < 20 {
		t.Fatalf("truth: %v %d records %d vms", err, len(tr.Records), len(tr.Tree))
	}
	live, _ := s.Truth()
	if len(live) != len(tr.Records) {
		t.Fatalf("live %d records, truth file %d", len(live), len(tr.Records))
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
	if _, err := ParseGenerate("hosts=0"); err == nil {
		t.Fatal("hosts=0 accepted")
	}
	if _, err := ParseGenerate("vms=x"); err == nil {
		t.Fatal("vms=x accepted")
	}
	if err := Run(context.Background(), Options{Scenario: "no-such-thing"}); err == nil || !strings.Contains(err.Error(), "threat-model") {
		t.Fatalf("unknown scenario: %v", err)
	}
}
