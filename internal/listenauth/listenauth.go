// Package listenauth is the rule for serving an HTTP view off loopback: a
// bearer token of MinTokenLen characters or more. The web view applies it
// when it listens and `config check` before the agent starts, so both
// say the same.
package listenauth

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"strings"
)

// ErrTokenRequired: a non-loopback address without a token.
var ErrTokenRequired = errors.New("a bearer token is required when listening on a non-loopback address (--token-file or VMLINEAGE_TOKEN)")

// MinTokenLen is the shortest token accepted off loopback: a guessable
// token is no better than none.
const MinTokenLen = 16

// IsLoopback reports whether addr (host:port) binds only to loopback. An
// empty host or an unspecified address (0.0.0.0, ::) binds everywhere.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Check reports why a server must not listen on addr with token.
func Check(addr, token string) error {
	if IsLoopback(addr) {
		return nil
	}
	if token == "" {
		return ErrTokenRequired
	}
	if len(token) < MinTokenLen {
		return fmt.Errorf("the bearer token is %d characters long; at least %d are required off loopback", len(token), MinTokenLen)
	}
	return nil
}

// BearerOK reports whether an Authorization header value carries token as
// "Bearer <token>": the scheme case-insensitive (RFC 7235 §2.1, RFC 6750
// §2.1), the token compared in constant time.
func BearerOK(header, token string) bool {
	scheme, got, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1
}
