package xapi

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/kolo/xmlrpc"
)

// encodeXMLRPC builds a methodCall with kolo's encoder. Strings go out as
// <string>, floats as <double> (xapi accepts typed and untyped values).
func encodeXMLRPC(method string, args []any) ([]byte, error) {
	return xmlrpc.EncodeMethodCall(method, args...)
}

// decodeXMLRPC parses a whole XML-RPC response held in memory. On success
// it hands the scanner, standing at the Value's <value>, to val, which must
// consume exactly that value. Failure envelopes become *Error.
func decodeXMLRPC(b []byte, val func(s *scanner) error) error {
	s := &scanner{b: b}
	if err := s.skipMisc(); err != nil {
		return err
	}
	if _, err := s.expectStart("methodResponse"); err != nil {
		return err
	}
	n, end, _, err := s.tag()
	if err != nil {
		return err
	}
	if !end && string(n) == "fault" {
		var f FaultError
		at := s.i
		if err := s.skipValue(); err != nil {
			return err
		}
		if err := xmlrpc.Response(s.b[at:s.i]).Unmarshal(&f); err != nil {
			return fmt.Errorf("%w: unreadable <fault>: %v", errSyntax, err)
		}
		return &f
	}
	if end || string(n) != "params" {
		return s.fail("expected <params> or <fault>")
	}
	if _, err := s.expectStart("param"); err != nil {
		return err
	}
	sc, c, err := s.value()
	if err != nil {
		return err
	}
	if c != "struct" {
		// system.listMethods answers a bare array; no call of ours does.
		return fmt.Errorf("%w: result is a %s%s, not the Status/Value envelope", errSyntax, c, sc.typ)
	}
	var status string
	var desc []string
	sawValue := false
	for {
		name, ok, err := s.nextMember()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if name, err = plainName(name); err != nil {
			return err
		}
		switch string(name) {
		case "Status":
			status, err = s.str()
		case "ErrorDescription":
			desc, err = s.strSlice(nil)
		case "Value":
			sawValue = true
			if val == nil {
				err = s.skipValue()
			} else {
				err = val(s)
			}
		default:
			err = s.skipValue()
		}
		if err != nil {
			return err
		}
		if err = s.endMember(); err != nil {
			return err
		}
	}
	if err := s.closeCompound(); err != nil {
		return err
	}
	if err := s.expectEnd("param"); err != nil {
		return err
	}
	if err := s.expectEnd("params"); err != nil {
		return err
	}
	if err := s.expectEnd("methodResponse"); err != nil {
		return err
	}
	switch status {
	case "Success":
		if !sawValue && val != nil {
			return fmt.Errorf("%w: Success without Value", errSyntax)
		}
		return nil
	case "Failure":
		return newError(desc)
	case "":
		return fmt.Errorf("%w: envelope has no Status member", errSyntax)
	}
	return fmt.Errorf("%w: unknown Status %q", errSyntax, status)
}

func newError(desc []string) *Error {
	if len(desc) == 0 {
		return &Error{Code: "UNKNOWN_ERROR"}
	}
	return &Error{Code: desc[0], Params: desc[1:]}
}

// koloValue decodes the value at the scanner with kolo into out: the
// generic path for results without a direct decoder.
func koloValue(out any) func(s *scanner) error {
	return func(s *scanner) error {
		at := s.i
		if err := s.skipValue(); err != nil {
			return err
		}
		if out == nil {
			return nil
		}
		if err := xmlrpc.Response(s.b[at:s.i]).Unmarshal(out); err != nil {
			return fmt.Errorf("decoding result into %T: %w", out, err)
		}
		return nil
	}
}

// streamRecords decodes a get_all_records response from r without holding
// it. The answer is read into a window; the in-memory scanner decodes one
// record member at a time from it, and when a step runs off the end of the
// window (every truncation is a syntax error, since everything ends with a
// tag) the unread tail is moved to the front, more is read, and the step is
// retried. So a 64,000-VM pool costs one window (≥ one record, at most
// maxRecord bytes), not the document.
func streamRecords(r io.Reader, maxRecord int64, fn func(ref string, snap *Snapshot) error) error {
	return streamEnvelope(r, maxRecord, "get_all_records", func(s *scanner, step func(func() error) error) error {
		for done := false; !done; {
			err := step(func() error {
				var err error
				done, err = s.decodeRecordMember(fn)
				if err == nil && done {
					if err = s.closeCompound(); err == nil {
						err = s.endMember()
					}
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// streamEnvelope reads an XML-RPC answer from r through a window of at most
// maxRecord bytes: the Status/Value envelope and a Fault here, the Value
// (a struct) by value, which is called right after the struct opens and must
// consume it and the Value member's end, each piece inside step (step
// re-runs a piece with more input when the window ended inside it).
func streamEnvelope(r io.Reader, maxRecord int64, what string, value func(s *scanner, step func(func() error) error) error) error {
	w := &window{r: r, max: int(maxRecord), buf: getWindow(min(int(maxRecord), streamChunk))}
	defer func() { putWindow(w.buf) }()
	s := &scanner{}
	step := func(f func() error) error {
		for {
			s.b = w.buf
			at := s.i
			err := f()
			if err == nil || !errors.Is(err, errSyntax) || w.eof {
				return err
			}
			s.i = at
			if err := w.more(&s.i); err != nil {
				return err
			}
		}
	}
	var fault bool
	err := step(func() error {
		if err := s.skipMisc(); err != nil {
			return err
		}
		if _, err := s.expectStart("methodResponse"); err != nil {
			return err
		}
		n, end, _, err := s.tag()
		if err != nil {
			return err
		}
		if !end && string(n) == "fault" {
			fault = true
			return nil
		}
		if end || string(n) != "params" {
			return s.fail("expected <params> or <fault>")
		}
		if _, err := s.expectStart("param"); err != nil {
			return err
		}
		if _, c, err := s.value(); err != nil || c != "struct" {
			if err == nil {
				err = fmt.Errorf("%w: result is not the Status/Value envelope", errSyntax)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if fault {
		var f FaultError
		var raw []byte
		err := step(func() error {
			at := s.i
			if err := s.skipValue(); err != nil {
				return err
			}
			raw = s.b[at:s.i]
			return nil
		})
		if err != nil {
			return err
		}
		if err := xmlrpc.Response(raw).Unmarshal(&f); err != nil {
			return fmt.Errorf("%w: unreadable <fault>: %v", errSyntax, err)
		}
		return &f
	}
	var status string
	var desc []string
	for {
		var more, records bool
		err := step(func() error {
			n, ok, err := s.nextMember()
			if err != nil || !ok {
				more = false
				return err
			}
			more = true
			if n, err = plainName(n); err != nil {
				return err
			}
			switch string(n) {
			case "Status":
				status, err = s.str()
			case "ErrorDescription":
				desc, err = s.strSlice(nil)
			case "Value":
				var c string
				var sc scalar
				if sc, c, err = s.value(); err == nil {
					switch {
					case c == "struct":
						records = true
						return nil // the member ends after the records
					case c != "" || sc.typ != "" || len(sc.text) != 0:
						return fmt.Errorf("%w: %s result is not a struct", errSyntax, what)
					}
				}
			default:
				err = s.skipValue()
			}
			if err != nil {
				return err
			}
			return s.endMember()
		})
		if err != nil {
			return err
		}
		if !more {
			break
		}
		if !records {
			continue
		}
		if err := value(s, step); err != nil {
			return err
		}
	}
	err = step(func() error {
		if err := s.closeCompound(); err != nil {
			return err
		}
		if err := s.expectEnd("param"); err != nil {
			return err
		}
		if err := s.expectEnd("params"); err != nil {
			return err
		}
		return s.expectEnd("methodResponse")
	})
	if err != nil {
		return err
	}
	switch status {
	case "Success":
		return nil
	case "Failure":
		return newError(desc)
	}
	return fmt.Errorf("%w: envelope has no valid Status (%q)", errSyntax, status)
}

// streamChunk is the window's initial size and read size.
var streamChunk = 1 << 20

// windowPool recycles windows: an event.from call that allocated (and the
// runtime cleared) a fresh megabyte cost more than decoding a small batch.
// Decoders copy what they keep, so a window is free once decoding ends.
var windowPool sync.Pool

func getWindow(size int) []byte {
	// Only a window of exactly the size asked for: a larger one would let
	// a record past a smaller MaxRecordBytes before the window fills.
	if p, ok := windowPool.Get().(*[]byte); ok && cap(*p) == size {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

// putWindow keeps windows of the usual size; one grown for a huge record
// goes to the garbage collector.
func putWindow(b []byte) {
	if cap(b) <= streamChunk {
		windowPool.Put(&b)
	}
}

// window is the read buffer of streamRecords.
type window struct {
	r   io.Reader
	buf []byte
	max int
	eof bool
}

// more drops what the scanner consumed (before *pos), reads at least one
// more byte, and rebases *pos.
func (w *window) more(pos *int) error {
	if *pos > 0 {
		n := copy(w.buf, w.buf[*pos:])
		w.buf = w.buf[:n]
		*pos = 0
	}
	if len(w.buf) == cap(w.buf) {
		if len(w.buf) >= w.max {
			return &TooLargeError{What: "record", Limit: int64(w.max)}
		}
		nb := make([]byte, len(w.buf), min(2*cap(w.buf)+1, w.max))
		copy(nb, w.buf)
		w.buf = nb
	}
	for {
		n, err := w.r.Read(w.buf[len(w.buf):cap(w.buf)])
		w.buf = w.buf[:len(w.buf)+n]
		if err == io.EOF {
			w.eof = true
			return nil
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}
