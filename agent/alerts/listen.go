package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/vmlineage/vmlineage/internal/listenauth"
	"github.com/vmlineage/vmlineage/internal/syslogframe"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Handler receives each alert read by a listener. It is called from the
// listener's goroutines; the syslog listeners call it in arrival order per
// connection.
type Handler func(ctx context.Context, a *Alert) ([]byte, error)

// SyslogListener reads CEF alerts over syslog: UDP (one message per
// datagram) and TCP (octet-counted, RFC 6587 §3.4.1, or newline-framed,
// §3.4.2, detected per message). A message that is not a readable CEF
// alert is logged with the sender and the reason, and passed to OnError so
// that it can be forwarded as an error document.
//
// With Ordered set, alerts go to it (Ordered.Go) instead of Handle: up to
// its workers are enriched at once (one at a time, the listener could take
// only as many alerts a second as one enrichment allows, and a UDP sender
// would lose the rest); each is matched and entered in the alert log in
// arrival order, and reaches Emit as soon as it is enriched.
type SyslogListener struct {
	Handle  Handler
	Ordered *Ordered
	Emit    func(doc []byte) // with Ordered: each enriched alert
	Log     *slog.Logger
	OnError func(raw []byte, err error)
	// Zone is the zone of alert times that carry none (RFC 3164 headers,
	// CEF dates without a zone); nil: UTC.
	Zone *time.Location
}

func (l *SyslogListener) log() *slog.Logger {
	if l.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Log
}

func (l *SyslogListener) one(ctx context.Context, raw []byte, source, peer string) {
	a, err := ParseSyslogCEFIn(raw, time.Now(), l.Zone)
	if err == nil {
		a.Source = source
		if l.Ordered != nil {
			l.Ordered.Go(ctx, a, func(js []byte, err error) {
				if err != nil {
					l.refuse(raw, source, peer, err)
				} else if l.Emit != nil {
					l.Emit(js)
				}
			})
			return
		}
		_, err = l.Handle(ctx, a)
	}
	if err != nil {
		l.refuse(raw, source, peer, err)
	}
}

func (l *SyslogListener) refuse(raw []byte, source, peer string, err error) {
	l.log().Warn("syslog alert refused", "from", peer, "transport", source, "error", err, "message", firstBytes(raw, 200))
	if l.OnError != nil {
		l.OnError(raw, err)
	}
}

// ServeUDP reads datagrams from pc until ctx ends; each is one alert.
func (l *SyslogListener) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	return syslogframe.ServeUDP(ctx, pc, func(msg []byte, from string) { l.one(ctx, msg, "syslog-udp", from) }, func(n int64) {
		l.log().Warn("alerts over syslog/UDP: the kernel dropped datagrams (receive buffer full): those alerts are lost; send over TCP or raise net.core.rmem_max",
			"addr", pc.LocalAddr().String(), "dropped", n)
	})
}

// ServeTCP accepts connections on ln until ctx ends; each carries
// octet-counted or LF-terminated messages (internal/syslogframe).
func (l *SyslogListener) ServeTCP(ctx context.Context, ln net.Listener) error {
	return syslogframe.ServeTCP(ctx, ln, MaxAlertBytes, func(msg []byte, overlong bool, from string) {
		if overlong {
			l.log().Warn("syslog alert refused", "from", from, "error", ErrTooLarge)
			if l.OnError != nil {
				l.OnError(msg, ErrTooLarge)
			}
			return
		}
		l.one(ctx, msg, "syslog-tcp", from)
	}, func(from string, err error) {
		// An alert cut by the connection's end is refused like any
		// unreadable one (an error document), not dropped unseen.
		var te *syslogframe.TruncatedError
		if errors.As(err, &te) {
			l.refuse(te.Partial, "syslog-tcp", from, err)
			return
		}
		l.log().Warn("syslog connection dropped", "from", from, "error", err)
	})
}

// HTTPHandler serves POST /v1/alerts: ECS JSON alerts, one object, a JSON
// array of objects, or JSON lines, with "Authorization: Bearer <token>".
// The answer is 200 with the enriched alerts as JSON lines, in order; an
// alert that cannot be read gets an error document in its place (so the
// count always matches) and the X-Vmlineage-Errors header counts them. A
// body that is not JSON at all is 400; a body over maxBody is 413. The
// alerts of one request go to handle one by one; see HTTPHandlerOrdered.
func HTTPHandler(token string, handle Handler, log *slog.Logger) (http.Handler, error) {
	return httpHandler(token, log, func(ctx context.Context, alerts []*Alert, out [][]byte, errs []error) {
		for i, a := range alerts {
			if a != nil {
				out[i], errs[i] = handle(ctx, a)
			}
		}
	})
}

// HTTPHandlerOrdered is HTTPHandler with the alerts of a request enriched
// through o, several at once (each still counts for the ones after it);
// emit gets each enriched alert as it is handed over, and the answer keeps
// the request's order.
func HTTPHandlerOrdered(token string, o *Ordered, emit func(doc []byte), log *slog.Logger) (http.Handler, error) {
	return HTTPHandlerOrderedErrors(token, o, emit, nil, log)
}

// HTTPHandlerOrderedErrors is HTTPHandlerOrdered whose items that cannot be
// read or enriched also go to onError (the raw item and why), as
// SyslogListener.OnError: the agent's outputs and `alerts serve --out` get
// the error document, not only the HTTP client's answer.
func HTTPHandlerOrderedErrors(token string, o *Ordered, emit func(doc []byte), onError func(raw []byte, err error), log *slog.Logger) (http.Handler, error) {
	return httpHandlerErr(token, log, onError, func(ctx context.Context, alerts []*Alert, out [][]byte, errs []error) {
		var wg sync.WaitGroup
		for i, a := range alerts {
			if a == nil {
				continue
			}
			wg.Add(1)
			o.Go(ctx, a, func(js []byte, err error) {
				defer wg.Done()
				out[i], errs[i] = js, err
				if err == nil && emit != nil {
					emit(js)
				}
			})
		}
		wg.Wait()
	})
}

// httpHandler serves the endpoint; run enriches the readable alerts of a
// request (nil where an item could not be read) into out and errs.
func httpHandler(token string, log *slog.Logger, run func(ctx context.Context, alerts []*Alert, out [][]byte, errs []error)) (http.Handler, error) {
	return httpHandlerErr(token, log, nil, run)
}

// httpHandlerErr is httpHandler telling onError (when set) of each item
// that failed.
func httpHandlerErr(token string, log *slog.Logger, onError func(raw []byte, err error), run func(ctx context.Context, alerts []*Alert, out [][]byte, errs []error)) (http.Handler, error) {
	if strings.TrimSpace(token) == "" {
		return nil, errors.New("alerts: the HTTP endpoint needs a bearer token")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	const maxBody = 16 << 20
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/alerts", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		if !listenauth.BearerOK(r.Header.Get("Authorization"), token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vmlineage"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			log.Warn("alert POST refused: bad token", "from", r.RemoteAddr)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, fmt.Sprintf("body over %d bytes", maxBody), http.StatusRequestEntityTooLarge)
			return
		}
		items, err := splitBody(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		alerts := make([]*Alert, len(items))
		docs := make([][]byte, len(items))
		errs := make([]error, len(items))
		for i, it := range items {
			if a, err := ParseJSON(it, time.Now()); err != nil {
				errs[i] = err
			} else {
				a.Source = "http"
				alerts[i] = a
			}
		}
		run(r.Context(), alerts, docs, errs)
		var out bytes.Buffer
		nerr := 0
		for i, it := range items {
			js := docs[i]
			if err := errs[i]; err != nil {
				nerr++
				err = fmt.Errorf("alert %d: %w", i+1, err)
				log.Warn("alert refused", "from", r.RemoteAddr, "error", err)
				js = ErrorDoc(it, err, time.Now())
				if onError != nil {
					onError(it, err)
				}
			}
			out.Write(js)
			out.WriteByte('\n')
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("X-Vmlineage-Errors", strconv.Itoa(nerr))
		w.Write(out.Bytes())
	})
	return mux, nil
}

// splitBody returns the alerts of a body: one object, an array, or lines.
func splitBody(body []byte) ([][]byte, error) {
	t := bytes.TrimSpace(body)
	if len(t) == 0 {
		return nil, errors.New("empty body")
	}
	if t[0] == '[' {
		var arr []json.RawMessage
		if err := json.Unmarshal(t, &arr); err != nil {
			return nil, fmt.Errorf("body is not a JSON array of alerts: %v", err)
		}
		out := make([][]byte, len(arr))
		for i := range arr {
			out[i] = arr[i]
		}
		return out, nil
	}
	if t[0] != '{' {
		return nil, errors.New("body must be a JSON object, an array of objects, or JSON lines")
	}
	if json.Valid(t) {
		return [][]byte{t}, nil
	}
	var out [][]byte
	for _, line := range bytes.Split(t, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			out = append(out, line)
		}
	}
	return out, nil
}

// httpShutdownWait bounds how long ShutdownHTTP waits for the requests
// under way (a sensor's batch being enriched).
const httpShutdownWait = 10 * time.Second

// ShutdownHTTP stops srv taking requests and waits, up to
// httpShutdownWait, for those under way to be answered, so that their
// alerts are enriched and emitted before the enricher stops; then it
// closes what is left. It returns nil on a clean stop.
func ShutdownHTTP(srv *http.Server, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownWait)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		if log != nil {
			log.Warn("alert HTTP intake: requests still running at shutdown", "error", err)
		}
		return srv.Close()
	}
	return nil
}
