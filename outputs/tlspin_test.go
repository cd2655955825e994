package outputs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

func pinCert(t *testing.T, cn string, isCA bool, parent *x509.Certificate, pkey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true,
		DNSNames: []string{cn}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
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

// TestVerifyPin: the pin must match the leaf (or, with allowCA, a CA the
// leaf verifies up to); a pinned certificate merely appended to the chain
// by a server holding another key must not pass.
func TestVerifyPin(t *testing.T) {
	ca, caKey := pinCert(t, "ca", true, nil, nil)
	leaf, _ := pinCert(t, "es", false, ca, caKey)
	evil, _ := pinCert(t, "evil", true, nil, nil)
	pinCA, pinLeaf := sha256.Sum256(ca.Raw), sha256.Sum256(leaf.Raw)
	for _, c := range []struct {
		name    string
		certs   []*x509.Certificate
		pin     [32]byte
		allowCA bool
		ok      bool
	}{
		{"leaf", []*x509.Certificate{leaf, ca}, pinLeaf, false, true},
		{"leaf appended after another", []*x509.Certificate{evil, leaf}, pinLeaf, false, false},
		{"leaf appended, CA allowed", []*x509.Certificate{evil, leaf}, pinLeaf, true, false},
		{"CA not allowed", []*x509.Certificate{leaf, ca}, pinCA, false, false},
		{"CA signing the leaf", []*x509.Certificate{leaf, ca}, pinCA, true, true},
		{"CA appended after an unrelated leaf", []*x509.Certificate{evil, ca}, pinCA, true, false},
		{"none", nil, pinLeaf, true, false},
	} {
		err := VerifyPin(c.certs, c.pin, c.allowCA)
		if (err == nil) != c.ok {
			t.Errorf("%s: VerifyPin = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
