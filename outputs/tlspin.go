package outputs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ParseFingerprint reads a hex SHA-256 fingerprint, colons allowed.
func ParseFingerprint(s string) ([32]byte, error) {
	var out [32]byte
	b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if err != nil || len(b) != 32 {
		return out, fmt.Errorf("fingerprint %q: want 64 hex digits (SHA-256)", s)
	}
	copy(out[:], b)
	return out, nil
}

// VerifyPin checks a TLS peer's certificates (tls.ConnectionState's
// PeerCertificates, leaf first) against a pinned SHA-256 fingerprint.
//
// Only the leaf counts as such: the handshake proves the peer holds the
// leaf's key, not the key of anything else it sent, and the other
// certificates (a CA's, the genuine server's) are public, so matching the
// pin against "any certificate sent" let anyone pass by appending them.
// With allowCA, a pin of a CA certificate is accepted too, but only when
// the leaf's chain verifies up to that pinned certificate as the sole root
// (Elasticsearch prints its CA's fingerprint). Host names are not checked
// here: the pin is the trust anchor.
func VerifyPin(certs []*x509.Certificate, want [32]byte, allowCA bool) error {
	if len(certs) == 0 {
		return errors.New("the server sent no certificate")
	}
	if sha256.Sum256(certs[0].Raw) == want {
		return nil
	}
	if allowCA {
		for _, c := range certs[1:] {
			if sha256.Sum256(c.Raw) != want {
				continue
			}
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(c)
			for _, ic := range certs[1:] {
				inter.AddCert(ic)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if err != nil {
				return fmt.Errorf("server certificate is not signed by the pinned CA %s: %w", hex.EncodeToString(want[:]), err)
			}
			return nil
		}
	}
	return fmt.Errorf("server certificate does not match the pinned fingerprint %s", hex.EncodeToString(want[:]))
}
