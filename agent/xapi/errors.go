package xapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
)

// ProtocolError means the server answered, but not as XAPI does: an HTML
// page, a 404, JSON garbage, a malformed or truncated XML-RPC document.
type ProtocolError struct {
	URL         string
	Method      string
	StatusCode  int    // HTTP status, 0 if the HTTP exchange itself was fine
	ContentType string // as sent
	Reason      string
	Snippet     string // start of the body, for the operator
	Err         error
}

func (e *ProtocolError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "xapi %s %s: not a valid XenAPI answer: %s", e.URL, e.Method, e.Reason)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d", e.StatusCode)
		if e.ContentType != "" {
			fmt.Fprintf(&b, ", %s", e.ContentType)
		}
		b.WriteString(")")
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Snippet != "" {
		fmt.Fprintf(&b, "; body starts %q", e.Snippet)
	}
	return b.String()
}

func (e *ProtocolError) Unwrap() error { return e.Err }

// TooLargeError means a response passed the configured byte cap; the rest
// was not read.
type TooLargeError struct {
	URL, Method string
	Limit       int64
	What        string // "response" or "record"
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("xapi %s %s: %s larger than the limit of %d bytes (raise MaxResponseBytes/MaxRecordBytes if this pool is that big)",
		e.URL, e.Method, e.What, e.Limit)
}

// TransportError wraps a failure to reach the server or to read its answer
// in time: DNS, refused, reset, TLS, timeouts.
type TransportError struct {
	URL, Method string
	Err         error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("xapi %s %s: %v", e.URL, e.Method, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// FaultError is an XML-RPC <fault>, which xapi never sends for API errors:
// the endpoint is some other XML-RPC server.
type FaultError struct {
	Code   int    `xmlrpc:"faultCode"`
	String string `xmlrpc:"faultString"`
}

func (e *FaultError) Error() string {
	return fmt.Sprintf("XML-RPC fault %d: %s (is this a XenAPI server?)", e.Code, e.String)
}

// ErrPlainHTTP is returned by New for an http:// URL without AllowHTTP.
var ErrPlainHTTP = errors.New("refusing plain http:// (credentials and session in clear text); use https:// or set AllowHTTP")

// errorCode returns the XenAPI code of err, or "".
func errorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Retryable reports whether err is worth retrying after a pause: the host is
// unreachable or slow, or answered something that may be transient.
// XenAPI errors other than those the watcher handles are not.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var te *TransportError
	var pe *ProtocolError
	var ne net.Error
	switch {
	case errors.As(err, &te), errors.As(err, &pe), errors.As(err, &ne):
		return true
	case errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return false
}
