package syslog

import (
	"bufio"
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
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
)

func pinSelfSigned(t *testing.T, cn string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der, k
}

// pinServer serves TLS with chain (leaf first, key of the leaf) and
// reports what the first connection sent up to the first '"'.
func pinServer(t *testing.T, chain [][]byte, key *ecdsa.PrivateKey) (string, <-chan string) {
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('"')
		got <- line
	}()
	return l.Addr().String(), got
}

func pinSend(t *testing.T, addr string, tc TLSConfig) error {
	o, err := New(Config{Network: "tls", Address: addr, TLS: tc, ReplayWindow: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	return o.Send(context.Background(), []outputs.Item{{ID: "secret-1", Payload: []byte("CEF:0|x|y|1|1|n|1|")}})
}

func hexPin(der []byte) string { s := sha256.Sum256(der); return hex.EncodeToString(s[:]) }

// TestPinIsCheckedOnTheLeaf: a server holding another key that appends the
// pinned (public) certificate after its own is refused; the genuine one is
// accepted.
func TestPinIsCheckedOnTheLeaf(t *testing.T) {
	realDER, realKey := pinSelfSigned(t, "receiver.example")
	evilDER, evilKey := pinSelfSigned(t, "attacker.example")
	addr, got := pinServer(t, [][]byte{evilDER, realDER}, evilKey)
	if err := pinSend(t, addr, TLSConfig{Fingerprint: hexPin(realDER)}); err == nil {
		select {
		case m := <-got:
			t.Fatalf("pin accepted a server holding a different key; it read %q", m)
		case <-time.After(2 * time.Second):
			t.Fatal("pin accepted a server holding a different key")
		}
	}
	addr, _ = pinServer(t, [][]byte{realDER}, realKey)
	if err := pinSend(t, addr, TLSConfig{Fingerprint: hexPin(realDER)}); err != nil {
		t.Fatalf("genuine server refused: %v", err)
	}
}

// TestPinAndCAFileBothHold: with a CA file and a pin, the chain must verify
// to the CA file and the leaf must match the pin.
func TestPinAndCAFileBothHold(t *testing.T) {
	der, key := pinSelfSigned(t, "localhost")
	other, _ := pinSelfSigned(t, "localhost")
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.pem"), filepath.Join(dir, "bad.pem")
	os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(bad, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other}), 0o644)
	for _, c := range []struct {
		name string
		tc   TLSConfig
		ok   bool
	}{
		{"both hold", TLSConfig{CAFile: good, Fingerprint: hexPin(der), ServerName: "localhost"}, true},
		{"pin mismatch", TLSConfig{CAFile: good, Fingerprint: hexPin(other), ServerName: "localhost"}, false},
		{"CA mismatch", TLSConfig{CAFile: bad, Fingerprint: hexPin(der), ServerName: "localhost"}, false},
	} {
		addr, _ := pinServer(t, [][]byte{der}, key)
		if err := pinSend(t, addr, c.tc); (err == nil) != c.ok {
			t.Errorf("%s: Send = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
