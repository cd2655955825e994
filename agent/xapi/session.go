package xapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Login opens a session with session.login_with_password(user, password,
// "1.1", originator). A pool member answers HOST_IS_SLAVE [master]; the
// login is then repeated on the master with the same scheme and port, at
// most MaxRedirects times. If the current master cannot be reached, the
// configured URL and then every pool host seen so far are tried: after a
// failover any survivor names the new master.
func (c *Client) Login(ctx context.Context) error {
	var firstErr error
	for _, base := range c.candidates() {
		err := c.loginVia(ctx, base)
		if err == nil {
			return nil
		}
		if firstErr == nil {
			firstErr = err
		}
		var te *TransportError
		if !errors.As(err, &te) {
			return err // the host answered: wrong password, not XAPI, …
		}
		c.log.Warn("xapi: host unreachable, trying the next pool host", "host", base.Host, "err", err)
	}
	return firstErr
}

// candidates lists the places to try, current master first.
func (c *Client) candidates() []*url.URL {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfgURL, _ := url.Parse(c.cfg.URL)
	out := []*url.URL{c.master}
	seen := map[string]bool{c.master.Host: true}
	add := func(u *url.URL) {
		if !seen[u.Host] {
			seen[u.Host] = true
			out = append(out, u)
		}
	}
	add(&url.URL{Scheme: cfgURL.Scheme, Host: cfgURL.Host})
	for _, h := range c.hosts {
		add(withHost(c.master, h))
	}
	return out
}

func (c *Client) loginVia(ctx context.Context, base *url.URL) error {
	for hop := 0; ; hop++ {
		var ref string
		c.takePendingPin() // drop any stale thumbprint
		err := c.rawCall(ctx, base, "session.login_with_password",
			[]any{c.cfg.User, c.cfg.Password, "1.1", c.cfg.Originator}, c.cfg.CallTimeout,
			decoder{xml: koloValue(&ref), json: func(raw json.RawMessage) error { return json.Unmarshal(raw, &ref) }})
		var xe *Error
		if errors.As(err, &xe) && xe.Code == ErrHostIsSlave {
			if len(xe.Params) == 0 || xe.Params[0] == "" {
				return fmt.Errorf("xapi login on %s: HOST_IS_SLAVE without a master address", base.Host)
			}
			if hop >= c.cfg.MaxRedirects {
				return fmt.Errorf("xapi login: more than %d HOST_IS_SLAVE redirects (last %s → %s): %w",
					c.cfg.MaxRedirects, base.Host, xe.Params[0], err)
			}
			next := withHost(base, xe.Params[0])
			if fp := c.takePendingPin(); fp != nil {
				// The member passed our pin check, so its word on the
				// master's certificate is as good as our own pin.
				c.pins.set(next.Hostname(), fp)
			}
			c.log.Info("xapi: pool member, following to master", "member", base.Host, "master", next.Host)
			base = next
			continue
		}
		if err != nil {
			if IsCode(err, ErrAuthFailed) {
				return fmt.Errorf("xapi login as %q on %s: wrong user name or password: %w", c.cfg.User, base.Host, err)
			}
			return fmt.Errorf("xapi login on %s: %w", base.Host, err)
		}
		if !strings.HasPrefix(ref, "OpaqueRef:") {
			return &ProtocolError{URL: base.String(), Method: "session.login_with_password",
				Reason: fmt.Sprintf("session ref %q is not an OpaqueRef", ref)}
		}
		c.mu.Lock()
		c.master, c.session = base, ref
		c.mu.Unlock()
		c.log.Info("xapi: logged in", "master", base.Host, "protocol", c.Protocol())
		return nil
	}
}

// Logout ends the session; the client forgets it even if the call fails.
func (c *Client) Logout(ctx context.Context) error {
	base, sess := c.current()
	if sess == "" {
		return nil
	}
	c.mu.Lock()
	c.session = ""
	c.mu.Unlock()
	return c.rawCall(ctx, base, "session.logout", []any{sess}, c.cfg.CallTimeout,
		decoder{xml: koloValue(nil), json: func(json.RawMessage) error { return nil }})
}

// ForgetSession drops the session without a call (it is already invalid).
func (c *Client) ForgetSession() {
	c.mu.Lock()
	c.session = ""
	c.mu.Unlock()
}

// Hosts returns the pool host addresses seen so far.
func (c *Client) Hosts() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.hosts...)
}

func (c *Client) noteHost(addr string) {
	if addr == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		if h == addr {
			return
		}
	}
	c.hosts = append(c.hosts, addr)
}

// withHost replaces the host of base, keeping scheme and port.
func withHost(base *url.URL, host string) *url.URL {
	h := host
	if port := base.Port(); port != "" {
		h = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		h = "[" + host + "]"
	}
	return &url.URL{Scheme: base.Scheme, Host: h}
}

// learnPin keeps the master thumbprint a member sends with HOST_IS_SLAVE.
func (c *Client) learnPin(resp *http.Response) {
	if c.cfg.Fingerprint == "" {
		return
	}
	v := resp.Header.Get(thumbprintResponseHeader)
	if v == "" {
		return
	}
	fp, err := ParseFingerprint(v)
	if err != nil {
		c.log.Warn("xapi: ignoring unreadable master thumbprint header", "value", v)
		return
	}
	c.mu.Lock()
	c.pendingPin = fp
	c.mu.Unlock()
}

func (c *Client) takePendingPin() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	fp := c.pendingPin
	c.pendingPin = nil
	return fp
}
