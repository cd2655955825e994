package xapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config of a Client. Password is the secret itself, already read by the
// caller from a file or the environment (never a command-line argument).
type Config struct {
	URL         string // https://pool-master[:port][/path]
	User        string
	Password    string
	Originator  string // session originator; default "vmlineage"
	CAFile      string // PEM roots instead of the system's
	Fingerprint string // SHA-256 of the server's leaf certificate (hex, colons optional); replaces chain checks
	AllowHTTP   bool   // permit http:// URLs
	Transport   string // "xmlrpc" (default), "jsonrpc", or "auto" (JSON-RPC, XML-RPC if /jsonrpc answers text/xml)

	CallTimeout      time.Duration // per call; default 60 s (event.from gets its own)
	BulkTimeout      time.Duration // get_all_records; default 10 min
	DialTimeout      time.Duration // TCP connect and TLS handshake; default 10 s
	MaxResponseBytes int64         // cap on a buffered answer; default 64 MiB
	MaxRecordBytes   int64         // cap on one record of a streamed get_all_records; default 8 MiB
	MaxStreamBytes   int64         // cap on a whole streamed answer; default 4 GiB
	MaxRedirects     int           // HOST_IS_SLAVE hops per login; default 3
	Logger           *slog.Logger
}

func (cfg *Config) setDefaults() {
	if cfg.Originator == "" {
		cfg.Originator = "vmlineage"
	}
	if cfg.Transport == "" {
		cfg.Transport = "xmlrpc"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.CallTimeout, 60*time.Second)
	def(&cfg.BulkTimeout, 10*time.Minute)
	def(&cfg.DialTimeout, 10*time.Second)
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 64 << 20
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = 8 << 20
	}
	if cfg.MaxStreamBytes <= 0 {
		cfg.MaxStreamBytes = 4 << 30
	}
	if cfg.MaxRedirects <= 0 {
		cfg.MaxRedirects = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

// Client talks to one pool. It is safe for concurrent use.
type Client struct {
	cfg  Config
	hc   *http.Client
	pins *pins
	log  *slog.Logger
	path string // XML-RPC path from the URL, "/" by default
	ids  atomic.Uint64
	// lastEvents is how many events the last event.from answer held: the
	// next answer's slice starts at about that size instead of doubling up
	// to it (that growth was 8% of what a busy pool's tracing allocated).
	lastEvents atomic.Int64

	mu         sync.Mutex
	master     *url.URL // scheme://host:port of the current master
	session    string
	proto      string   // resolved transport: "xmlrpc" or "jsonrpc"
	hosts      []string // pool host addresses seen in host records
	pendingPin []byte   // master thumbprint from the last HOST_IS_SLAVE
}

// New checks cfg and builds a client; it does not connect.
func New(cfg Config) (*Client, error) {
	cfg.setDefaults()
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("xapi URL %q: want https://host[:port]", cfg.URL)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !cfg.AllowHTTP {
			return nil, fmt.Errorf("xapi URL %s: %w", cfg.URL, ErrPlainHTTP)
		}
	default:
		return nil, fmt.Errorf("xapi URL %q: scheme must be https (or http with AllowHTTP)", cfg.URL)
	}
	switch cfg.Transport {
	case "xmlrpc", "jsonrpc", "auto":
	default:
		return nil, fmt.Errorf("xapi transport %q: want xmlrpc, jsonrpc or auto", cfg.Transport)
	}
	if cfg.Fingerprint != "" && cfg.CAFile != "" {
		return nil, errors.New("xapi: set either Fingerprint or CAFile, not both")
	}
	pn := &pins{m: map[string][]byte{}}
	if cfg.Fingerprint != "" {
		fp, err := ParseFingerprint(cfg.Fingerprint)
		if err != nil {
			return nil, err
		}
		pn.set(u.Hostname(), fp)
	}
	hc, err := newHTTPClient(&cfg, pn)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, hc: hc, pins: pn, log: cfg.Logger, path: u.Path}
	if c.path == "" {
		c.path = "/"
	}
	c.master = &url.URL{Scheme: u.Scheme, Host: u.Host}
	if cfg.Transport != "auto" {
		c.proto = cfg.Transport
	}
	return c, nil
}

// Session returns the current session ref ("" before Login).
func (c *Client) Session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// MasterURL returns the base URL of the host currently used as master.
func (c *Client) MasterURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.master.String()
}

// Protocol returns "xmlrpc" or "jsonrpc" ("" while auto has not decided).
func (c *Client) Protocol() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proto
}

// decoder receives the Value of a successful answer in the form the
// transport produced.
type decoder struct {
	xml  func(s *scanner) error          // XML-RPC: scanner at <value>
	json func(raw json.RawMessage) error // JSON-RPC: the result
}

// rawCall performs one RPC against base without adding a session.
func (c *Client) rawCall(ctx context.Context, base *url.URL, method string, args []any, timeout time.Duration, d decoder) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.mu.Lock()
	proto := c.proto
	c.mu.Unlock()
	if proto == "" || proto == "jsonrpc" {
		fallback, err := c.jsonCall(ctx, base, method, args, d, proto == "")
		if !fallback {
			if err == nil && proto == "" {
				c.setProto("jsonrpc")
			}
			return err
		}
		c.log.Info("xapi: /jsonrpc not served as JSON, using XML-RPC", "host", base.Host, "reason", err)
		c.setProto("xmlrpc")
	}
	return c.xmlCall(ctx, base, method, args, d)
}

func (c *Client) setProto(p string) {
	c.mu.Lock()
	c.proto = p
	c.mu.Unlock()
}

func (c *Client) xmlCall(ctx context.Context, base *url.URL, method string, args []any, d decoder) error {
	u := base.JoinPath(c.path).String()
	body, err := encodeXMLRPC(method, args)
	if err != nil {
		return fmt.Errorf("xapi %s: encoding arguments: %w", method, err)
	}
	resp, err := c.post(ctx, u, method, "text/xml", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	c.learnPin(resp)
	if err := checkHTTP(resp, u, method); err != nil {
		return err
	}
	buf, err := readCapped(resp, c.cfg.MaxResponseBytes, u, method)
	if err != nil {
		return ctxErr(ctx, err)
	}
	defer putBuf(buf)
	if err := decodeXMLRPC(buf.Bytes(), d.xml); err != nil {
		return c.wrapDecode(err, u, method, resp, buf.Bytes())
	}
	return nil
}

// jsonCall returns fallback=true when auto detection should retry over
// XML-RPC (the host answered /jsonrpc with text/xml or with no JSON at all).
func (c *Client) jsonCall(ctx context.Context, base *url.URL, method string, args []any, d decoder, detect bool) (fallback bool, err error) {
	u := base.JoinPath("/jsonrpc").String()
	body, err := encodeJSONRPC(method, args, c.ids.Add(1))
	if err != nil {
		return false, fmt.Errorf("xapi %s: encoding arguments: %w", method, err)
	}
	resp, err := c.post(ctx, u, method, "application/json", body)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	c.learnPin(resp)
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if detect && (ct == "text/xml" || (resp.StatusCode != http.StatusOK && ct != "application/json")) {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return true, fmt.Errorf("HTTP %d %s", resp.StatusCode, ct)
	}
	if err := checkHTTP(resp, u, method); err != nil {
		return false, err
	}
	buf, err := readCapped(resp, c.cfg.MaxResponseBytes, u, method)
	if err != nil {
		return false, ctxErr(ctx, err)
	}
	defer putBuf(buf)
	res, err := decodeJSONRPC(buf.Bytes())
	if err == nil && d.json != nil {
		err = d.json(res)
	}
	if err != nil {
		return false, c.wrapDecode(err, u, method, resp, buf.Bytes())
	}
	return false, nil
}

// wrapDecode keeps XenAPI errors as they are and names everything else a
// protocol error with the start of the body.
func (c *Client) wrapDecode(err error, u, method string, resp *http.Response, b []byte) error {
	var xe *Error
	if errors.As(err, &xe) {
		return xe
	}
	reason := "unparseable answer"
	ct := resp.Header.Get("Content-Type")
	if strings.Contains(ct, "html") || strings.HasPrefix(strings.TrimSpace(string(b[:min(len(b), 64)])), "<!") {
		reason = "an HTML page (wrong URL? not a XenServer/XCP-ng host?)"
	}
	return &ProtocolError{URL: u, Method: method, StatusCode: resp.StatusCode, ContentType: ct,
		Reason: reason, Err: err, Snippet: snippet(b)}
}

// ctxErr names a deadline as such: a body read cut by the call timeout
// otherwise surfaces as a bare "context deadline exceeded".
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		var te *TransportError
		if errors.As(err, &te) {
			te.Err = fmt.Errorf("call timed out (server slow or stalled): %w", te.Err)
		}
	}
	return err
}

// Call invokes method with the session prepended and decodes the Value into
// out (nil to discard) with kolo (XML-RPC) or encoding/json (JSON-RPC).
// Remember kolo's rule: XAPI's untyped values decode into strings and typed
// structs, not into interface{}.
func (c *Client) Call(ctx context.Context, method string, out any, args ...any) error {
	base, sess := c.current()
	if sess == "" {
		return errors.New("xapi: not logged in")
	}
	return c.rawCall(ctx, base, method, append([]any{sess}, args...), c.cfg.CallTimeout, decoder{
		xml:  koloValue(out),
		json: func(raw json.RawMessage) error { return unmarshalJSONResult(raw, out) },
	})
}

func (c *Client) current() (*url.URL, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.master, c.session
}

// EventFrom calls event.from. The HTTP deadline is timeout × 1.1 + 5 s, so
// the server's own timeout always fires first.
func (c *Client) EventFrom(ctx context.Context, classes []string, token string, timeout float64) (*EventBatch, error) {
	base, sess := c.current()
	if sess == "" {
		return nil, errors.New("xapi: not logged in")
	}
	// Keep the timeout a float on the wire even when whole: XO notes
	// XML-RPC hosts insist on a double here.
	args := []any{sess, classes, token, timeout}
	var b EventBatch
	ht := time.Duration(timeout*1.1*float64(time.Second)) + 5*time.Second
	if c.Protocol() == "xmlrpc" {
		// Decoded as it arrives: a busy pool's batch is tens of megabytes of XML.
		sb, err := c.eventFromStream(ctx, args, ht)
		if err != nil {
			return nil, err
		}
		for i := range sb.Events {
			if e := &sb.Events[i]; e.Class == "host" && e.Snapshot != nil {
				c.noteHost(e.Snapshot.Address)
			}
		}
		return sb, nil
	}
	err := c.rawCall(ctx, base, "event.from", args, ht, decoder{
		xml:  func(s *scanner) error { return s.decodeEventBatch(&b) },
		json: func(raw json.RawMessage) error { return decodeJSONBatch(raw, &b) },
	})
	if err != nil {
		return nil, err
	}
	for i := range b.Events {
		if e := &b.Events[i]; e.Class == "host" && e.Snapshot != nil {
			c.noteHost(e.Snapshot.Address)
		}
	}
	return &b, nil
}

// Inject calls event.inject and returns the token just before the touch.
func (c *Client) Inject(ctx context.Context, class, ref string) (string, error) {
	var tok string
	err := c.Call(ctx, "event.inject", &tok, class, ref)
	return tok, err
}

// GetAllRecords returns every record of class (ref → record). The answer is
// streamed: memory holds the decoded records, never the whole document.
func (c *Client) GetAllRecords(ctx context.Context, class string) (map[string]*Snapshot, error) {
	m := map[string]*Snapshot{}
	err := c.GetAllRecordsFunc(ctx, class, func(ref string, s *Snapshot) error {
		m[ref] = s
		return nil
	})
	return m, err
}

// GetAllRecordsFunc streams class.get_all_records, calling fn per record.
func (c *Client) GetAllRecordsFunc(ctx context.Context, class string, fn func(ref string, s *Snapshot) error) error {
	base, sess := c.current()
	if sess == "" {
		return errors.New("xapi: not logged in")
	}
	method := class + ".get_all_records"
	ctx, cancel := context.WithTimeout(ctx, c.cfg.BulkTimeout)
	defer cancel()
	wrapped := func(ref string, s *Snapshot) error {
		if class == "host" {
			c.noteHost(s.Address)
		}
		return fn(ref, s)
	}
	c.mu.Lock()
	proto := c.proto
	c.mu.Unlock()
	if proto == "" {
		// Let a cheap call settle the transport first.
		var v string
		if err := c.rawCall(ctx, base, "session.get_uuid", []any{sess, sess}, c.cfg.CallTimeout,
			decoder{xml: koloValue(&v), json: func(json.RawMessage) error { return nil }}); err != nil {
			return err
		}
		proto = c.Protocol()
	}
	var u, ctype string
	var body []byte
	var err error
	if proto == "jsonrpc" {
		u, ctype = base.JoinPath("/jsonrpc").String(), "application/json"
		body, err = encodeJSONRPC(method, []any{sess}, c.ids.Add(1))
	} else {
		u, ctype = base.JoinPath(c.path).String(), "text/xml"
		body, err = encodeXMLRPC(method, []any{sess})
	}
	if err != nil {
		return err
	}
	resp, err := c.post(ctx, u, method, ctype, body)
	if err != nil {
		return err
	}
	defer closeBody(resp.Body)
	if err := checkHTTP(resp, u, method); err != nil {
		return err
	}
	r := &countingReader{r: resp.Body, limit: c.cfg.MaxStreamBytes, url: u, method: method}
	if proto == "jsonrpc" {
		err = streamJSONRecords(r, wrapped)
	} else {
		err = streamRecords(r, c.cfg.MaxRecordBytes, wrapped)
	}
	if err == nil {
		return nil
	}
	var xe *Error
	var tl *TooLargeError
	var te *TransportError
	switch {
	case errors.As(err, &xe):
		return xe
	case errors.As(err, &tl):
		tl.URL, tl.Method = u, method
		return tl
	case errors.As(err, &te):
		return ctxErr(ctx, te)
	case ctx.Err() != nil:
		return &TransportError{URL: u, Method: method, Err: fmt.Errorf("call timed out (server slow or stalled): %w", err)}
	}
	return &ProtocolError{URL: u, Method: method, StatusCode: resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"), Reason: "unparseable answer", Err: err}
}

// PoolRef returns the ref of the (single) pool object.
func (c *Client) PoolRef(ctx context.Context) (string, error) {
	var refs []string
	if err := c.Call(ctx, "pool.get_all", &refs); err != nil {
		return "", err
	}
	if len(refs) == 0 {
		return "", errors.New("xapi: pool.get_all returned no pool")
	}
	return refs[0], nil
}

// unmarshalJSONResult is json.Unmarshal, except that XAPI datetimes
// ("20250319T04:16:24Z", not RFC 3339) decode into a *time.Time, as they do
// over XML-RPC.
func unmarshalJSONResult(raw json.RawMessage, out any) error {
	if out == nil {
		return nil
	}
	if t, ok := out.(*time.Time); ok {
		var f flexTime
		if err := f.UnmarshalJSON(raw); err != nil {
			return err
		}
		*t = time.Time(f)
		return nil
	}
	return json.Unmarshal(raw, out)
}
