package elasticsearch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func pinCert(t *testing.T, cn string, parent *x509.Certificate, pkey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: parent == nil, BasicConstraintsValid: true,
		DNSNames: []string{cn}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	if parent == nil {
		parent, pkey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, pkey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

// pinES is a TLS server sending chain (leaf first) with the leaf's key; it
// records the Authorization header it was given.
func pinES(t *testing.T, chain []*x509.Certificate, key *ecdsa.PrivateKey) (*httptest.Server, *string) {
	var auth string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, `{"took":1,"errors":false,"items":[{"create":{"status":201}}]}`)
	}))
	var ders [][]byte
	for _, c := range chain {
		ders = append(ders, c.Raw)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: ders, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &auth
}

func hexPin(c *x509.Certificate) string { s := sha256.Sum256(c.Raw); return hex.EncodeToString(s[:]) }

// TestFingerprintChecksTheLeafOrItsCA: a pinned CA (as Elasticsearch prints
// it) passes only when the leaf verifies up to it; a server with another key
// that appends the public CA certificate gets neither records nor
// credentials. With a CA file too, both must hold.
func TestFingerprintChecksTheLeafOrItsCA(t *testing.T) {
	ca, caKey := pinCert(t, "elasticsearch-ca", nil, nil)
	leaf, leafKey := pinCert(t, "127.0.0.1", ca, caKey)
	evil, evilKey := pinCert(t, "attacker", nil, nil)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644)
	other := filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(other, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: evil.Raw}), 0o644)

	imp, auth := pinES(t, []*x509.Certificate{evil, ca}, evilKey)
	o, err := New(fast(Config{URLs: []string{imp.URL}, Fingerprint: hexPin(ca), Username: "elastic", Password: "s3cret", MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Send(context.Background(), docs(1)); err == nil || *auth != "" {
		t.Errorf("pinned CA accepted a server with an unrelated key (Send %v); it got Authorization %q", err, *auth)
	}
	imp2, auth2 := pinES(t, []*x509.Certificate{evil, leaf}, evilKey)
	o, _ = New(fast(Config{URLs: []string{imp2.URL}, Fingerprint: hexPin(leaf), Username: "elastic", Password: "s3cret", MaxAttempts: 1}))
	if err := o.Send(context.Background(), docs(1)); err == nil || *auth2 != "" {
		t.Errorf("pinned leaf appended by a server with another key accepted (Send %v); it got Authorization %q", err, *auth2)
	}

	real, _ := pinES(t, []*x509.Certificate{leaf, ca}, leafKey)
	for _, c := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"CA pin", Config{Fingerprint: hexPin(ca)}, true},
		{"leaf pin", Config{Fingerprint: hexPin(leaf)}, true},
		{"CA file and pin", Config{CAFile: caFile, Fingerprint: hexPin(leaf)}, true},
		{"CA file and wrong pin", Config{CAFile: caFile, Fingerprint: hexPin(evil)}, false},
		{"wrong CA file and pin", Config{CAFile: other, Fingerprint: hexPin(leaf)}, false},
	} {
		c.cfg.URLs, c.cfg.MaxAttempts = []string{real.URL}, 1
		o, err := New(fast(c.cfg))
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Send(context.Background(), docs(1)); (err == nil) != c.ok {
			t.Errorf("%s: Send = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
