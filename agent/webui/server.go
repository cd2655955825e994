// Package webui is vmlineage's forensics view: an HTTP server with a small
// JSON API over the lineage store and an embedded single page (vanilla JS and
// SVG, no network assets) that draws a pool's VM family tree, a VM's
// lifecycle timeline and ancestors, and the pool as it was at a past time.
//
// The server is bound to loopback by default. Bound anywhere else it refuses
// to start without a bearer token (see Listen), and every API request must
// carry it. The same Server runs under `vmlineage serve` and inside the agent.
package webui

import (
	"context"
	"crypto/subtle"
	"embed"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/internal/listenauth"
)

//go:embed static
var staticFS embed.FS

// Mark is what the alert pipeline says about one VM: it raised an alert
// itself, or it is a suspect (a relative of an alerted VM, per the paper's
// lineage reasoning), with a score and a human-readable reason.
type Mark struct {
	Alerted bool    `json:"alerted,omitempty"`
	Suspect bool    `json:"suspect,omitempty"`
	Score   float64 `json:"score,omitempty"`
	Reason  string  `json:"reason,omitempty"`
}

// AlertSource supplies the current marks, keyed by VM uuid. The agent's
// alerts package implements it; a nil source means "no alerts".
type AlertSource interface {
	Marks(ctx context.Context) (map[string]Mark, error)
}

// Options configure a Server.
type Options struct {
	// Token, when not empty, is required as "Authorization: Bearer <Token>"
	// on every API request. Listen insists on one off loopback.
	Token string
	// Alerts supplies alert and suspect marks (may be nil).
	Alerts AlertSource
	// Logger receives request errors (nil: slog.Default()).
	Logger *slog.Logger
}

// Server is the forensics web UI. It implements http.Handler.
type Server struct {
	st   *lineage.Store
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
}

// New returns the UI over st. The store is only read.
func New(st *lineage.Store, opts Options) *Server {
	s := &Server{st: st, opts: opts, log: opts.Logger, mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.Default()
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	s.mux.Handle("GET /", http.FileServerFS(sub))
	s.mux.HandleFunc("GET /api/pools", s.api(s.handlePools))
	s.mux.HandleFunc("GET /api/hosts", s.api(s.handleHosts))
	s.mux.HandleFunc("GET /api/tree", s.api(s.handleTree))
	s.mux.HandleFunc("GET /api/marks", s.api(s.handleMarks))
	s.mux.HandleFunc("GET /api/vm/{uuid}", s.api(s.handleVM))
	s.mux.HandleFunc("GET /api/at", s.api(s.handleAt))
	s.mux.HandleFunc("GET /api/search", s.api(s.handleSearch))
	s.mux.HandleFunc("GET /api/", s.api(func(*http.Request) (any, error) {
		return nil, httpError{http.StatusNotFound, "no such API endpoint"}
	}))
	return s
}

// ServeHTTP adds the security headers every response carries, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Everything is served by us: no inline script, nothing from the network.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if s.opts.Token == "" && !loopbackHost(r.Host) {
		// Without a token we trust only loopback; a foreign Host header on a
		// loopback socket is a DNS-rebinding attempt.
		http.Error(w, "forbidden host "+r.Host+": without a token this server only answers to localhost", http.StatusForbidden)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// authorized checks the bearer token in constant time.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.opts.Token)) == 1
}

// loopbackHost reports whether a Host header names this machine's loopback.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsLoopback, ErrTokenRequired, MinTokenLen and CheckListen are
// listenauth's rule, which config check applies too.
var (
	IsLoopback       = listenauth.IsLoopback
	ErrTokenRequired = listenauth.ErrTokenRequired
)

// MinTokenLen: see listenauth.
const MinTokenLen = listenauth.MinTokenLen

// Listen opens addr for the server, refusing a non-loopback address when
// token is empty or shorter than MinTokenLen.
func Listen(addr, token string) (net.Listener, error) {
	if err := CheckListen(addr, token); err != nil {
		return nil, err
	}
	return net.Listen("tcp", addr)
}

// CheckListen reports why the server must not listen on addr with token.
func CheckListen(addr, token string) error { return listenauth.Check(addr, token) }

// Serve serves s on ln until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // a 10,000-VM tree is a few MB
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			return err
		}
		<-errc
		return nil
	}
}
