package xapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Header names xapi uses to tell a client the master's certificate
// thumbprint when it answers HOST_IS_SLAVE (xen-api ocaml/xapi/api_server.ml
// create_thumbprint_header, xapi_globs.ml).
const (
	thumbprintRequestHeader  = "x-xenapi-request-host-certificate-thumbprint"
	thumbprintRequestValue   = "sha-256:master"
	thumbprintResponseHeader = "x-xenapi-response-host-certificate-thumbprint"
)

// ParseFingerprint accepts a SHA-256 certificate fingerprint as hex, with or
// without colons or spaces, any case, optionally prefixed "sha256:".
func ParseFingerprint(s string) ([]byte, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimPrefix(strings.TrimPrefix(t, "sha-256:"), "sha256:")
	t = strings.NewReplacer(":", "", " ", "", "-", "").Replace(t)
	b, err := hex.DecodeString(t)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("fingerprint %q: want the 64 hex digits of a SHA-256 (colons optional)", s)
	}
	return b, nil
}

// pins holds the expected leaf-certificate digest per host name. The
// configured host gets Config.Fingerprint; masters found through
// HOST_IS_SLAVE get the thumbprint the (already verified) member reported.
type pins struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (p *pins) get(host string) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[strings.ToLower(host)]
}

func (p *pins) set(host string, fp []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[strings.ToLower(host)] = fp
}

// newHTTPClient builds the one HTTP client of a Client. No overall
// http.Client timeout: every call carries its own context deadline, since
// event.from legitimately blocks for its whole timeout.
func newHTTPClient(cfg *Config, pn *pins) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case cfg.Fingerprint != "":
		// The pin replaces chain and hostname checks: pools ship self-signed
		// certificates for their IP addresses. Checked in dialPinned, which
		// knows the host even when it is an IP (no SNI, so no ServerName).
		tc.InsecureSkipVerify = true
	case cfg.CAFile != "":
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   cfg.DialTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// xapi speaks HTTP/1.1 only.
		ForceAttemptHTTP2: false,
	}
	if cfg.Fingerprint != "" {
		// Through a proxy, net/http would do the TLS handshake itself with
		// tc (chain checks off) and the pin would never be checked.
		tr.Proxy = nil
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialPinned(ctx, d, tc, pn, network, addr)
		}
	}
	return &http.Client{
		Transport: tr,
		// A redirect would re-send the session to another place; XAPI
		// never redirects API calls.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

func dialPinned(ctx context.Context, d *net.Dialer, base *tls.Config, pn *pins, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := base.Clone()
	if net.ParseIP(host) == nil {
		tc.ServerName = host
	}
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server sent no certificate")
		}
		// A host:port pin (a member learnt from the pool) wins over the
		// host's: several endpoints may share an address.
		want := pn.get(addr)
		if want == nil {
			want = pn.get(host)
		}
		if want == nil {
			return fmt.Errorf("no pinned fingerprint for host %s (only the configured host and masters it names are pinned)", host)
		}
		got := sha256.Sum256(cs.PeerCertificates[0].Raw)
		if !bytes.Equal(got[:], want) {
			return fmt.Errorf("certificate fingerprint mismatch for %s: got %s, pinned %s", host, colonHex(got[:]), colonHex(want))
		}
		return nil
	}
	conn := tls.Client(raw, tc)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}

func colonHex(b []byte) string {
	h := strings.ToUpper(hex.EncodeToString(b))
	var sb strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}

// post sends one RPC body. The caller closes the body of the response.
func (c *Client) post(ctx context.Context, url, method, ctype string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, &TransportError{URL: url, Method: method, Err: err}
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "vmlineage-xapi/1")
	if c.cfg.Fingerprint != "" {
		req.Header.Set(thumbprintRequestHeader, thumbprintRequestValue)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &TransportError{URL: url, Method: method, Err: unwrapURLError(err)}
	}
	return resp, nil
}

func unwrapURLError(err error) error {
	var ue *neturl.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// bufPool recycles answer buffers: an event.from batch is often a megabyte,
// and decoders copy what they keep, so the buffer is free after decoding.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// keepBuf bounds what the pool holds on to.
const keepBuf = 8 << 20

func putBuf(b *bytes.Buffer) {
	if b.Cap() <= keepBuf {
		b.Reset()
		bufPool.Put(b)
	}
}

// readCapped reads the whole body or fails once it passes limit, so a huge
// or endless answer costs at most limit bytes of memory. The caller hands
// the buffer back with putBuf once decoded.
func readCapped(resp *http.Response, limit int64, url, method string) (*bytes.Buffer, error) {
	buf := bufPool.Get().(*bytes.Buffer)
	if n := resp.ContentLength; n > 0 && n <= limit {
		buf.Grow(int(n) + bytes.MinRead) // one allocation instead of doubling
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
	if n > limit {
		putBuf(buf)
		return nil, &TooLargeError{URL: url, Method: method, Limit: limit, What: "response"}
	}
	if err != nil {
		putBuf(buf)
		return nil, &TransportError{URL: url, Method: method, Err: fmt.Errorf("reading the answer after %d bytes: %w", n, err)}
	}
	return buf, nil
}

// countingReader fails once more than limit bytes went through it.
type countingReader struct {
	r           io.Reader
	n, limit    int64
	url, method string
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		return n, &TooLargeError{URL: c.url, Method: c.method, Limit: c.limit, What: "response"}
	}
	if err != nil && err != io.EOF {
		err = &TransportError{URL: c.url, Method: c.method, Err: fmt.Errorf("reading the answer after %d bytes: %w", c.n, err)}
	}
	return n, err
}

// checkHTTP turns a non-200 answer into a ProtocolError with a body snippet.
func checkHTTP(resp *http.Response, url, method string) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	snip, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	return &ProtocolError{URL: url, Method: method, StatusCode: resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"), Reason: "HTTP status " + resp.Status,
		Snippet: string(snip)}
}

func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}
