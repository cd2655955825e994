package xapi

import (
	"context"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// XAPI's HTTP handlers (/audit_log, /export, …) beside the RPC endpoint.

// HostBase returns the base URL of a pool host given its management
// address: the master's scheme and port with that address ("" for the
// current master).
func (c *Client) HostBase(address string) string {
	base, _ := c.current()
	if address == "" {
		return base.String()
	}
	return withHost(base, address).String()
}

// Get sends GET base+path with the client's session (session_id query
// parameter, as xapi_http.ml reads it) and query, over the client's
// transport: the same TLS settings and pins. base is a host's base URL
// (HostBase); "" is the master. The answer is not read: the caller streams
// and closes the body, and must bound what it reads (xapi's /audit_log has
// no Content-Length). A non-200 answer is a *ProtocolError naming the
// status (401 for a session xapi no longer knows, 403 for a refused RBAC
// permission).
func (c *Client) Get(ctx context.Context, base, path string, query url.Values) (*http.Response, error) {
	master, sess := c.current()
	if sess == "" {
		return nil, errors.New("xapi: not logged in")
	}
	b := master
	if base != "" {
		u, err := url.Parse(base)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("xapi: host URL %q: want scheme://host[:port]", base)
		}
		if u.Scheme != master.Scheme {
			return nil, fmt.Errorf("xapi: host URL %s: scheme differs from the master's (%s)", base, master.Scheme)
		}
		b = &url.URL{Scheme: u.Scheme, Host: u.Host}
	}
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("session_id", sess)
	u := b.JoinPath(path)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &TransportError{URL: redact(u), Method: "GET " + path, Err: err}
	}
	req.Header.Set("User-Agent", "vmlineage-xapi/1")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &TransportError{URL: redact(u), Method: "GET " + path, Err: unwrapURLError(err)}
	}
	if err := checkHTTP(resp, redact(u), "GET "+path); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// redact drops the session from a URL that goes into an error message.
func redact(u *url.URL) string {
	c := *u
	q := c.Query()
	if q.Has("session_id") {
		q.Set("session_id", "REDACTED")
	}
	c.RawQuery = q.Encode()
	return c.String()
}

// HostCertificate returns the PEM certificate a pool host serves
// (host.get_server_certificate), read over the already verified channel to
// the master.
func (c *Client) HostCertificate(ctx context.Context, hostRef string) (string, error) {
	var pemText string
	err := c.Call(ctx, "host.get_server_certificate", &pemText, hostRef)
	return pemText, err
}

// PinHost pins the certificate of the host at base (a host base URL) to
// certPEM, so that Get can reach a pool member with Fingerprint pinning:
// the master vouches for its members' certificates. Without Fingerprint
// (CA or system roots) pins are not used and PinHost does nothing.
func (c *Client) PinHost(base string, certPEM string) error {
	if c.cfg.Fingerprint == "" {
		return nil
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return fmt.Errorf("xapi: pin: host URL %q: want scheme://host[:port]", base)
	}
	blk, _ := pem.Decode([]byte(strings.TrimSpace(certPEM)))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return fmt.Errorf("xapi: pin %s: no PEM certificate in what the pool gave", u.Host)
	}
	sum := sha256.Sum256(blk.Bytes)
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	c.pins.set(net.JoinHostPort(u.Hostname(), port), sum[:])
	return nil
}
