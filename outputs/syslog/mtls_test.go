package syslog

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmlineage/vmlineage/internal/receivers"
)

// TestClientCertificate: a TLS receiver that requires a client certificate
// accepts ours and reads octet-counted frames.
func TestClientCertificate(t *testing.T) {
	dir := t.TempDir()
	srvCert, srvKey := filepath.Join(dir, "s.pem"), filepath.Join(dir, "s.key")
	cliCert, cliKey := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key")
	if err := receivers.SelfSigned(srvCert, srvKey); err != nil {
		receivers.Missing(t, "openssl", err)
	}
	if err := receivers.SelfSigned(cliCert, cliKey); err != nil {
		t.Fatal(err)
	}
	sc, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(cliCert)
	pool.AppendCertsFromPEM(pem)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{sc}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		n, err := r.ReadString(' ')
		if err != nil {
			got <- "read: " + err.Error()
			return
		}
		size, _ := strconv.Atoi(strings.TrimSpace(n))
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf)
	}()
	o, err := New(Config{Network: "tls", Address: l.Addr().String(), TLS: TLSConfig{CAFile: srvCert, CertFile: cliCert, KeyFile: cliKey}})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Send(context.Background(), testItems("m", 1)); err != nil {
		t.Fatal(err)
	}
	o.Close()
	if m := <-got; !strings.HasSuffix(m, hostile[0]) || !strings.Contains(m, `id="m-00000"`) {
		t.Fatalf("receiver got %q", m)
	}
}
