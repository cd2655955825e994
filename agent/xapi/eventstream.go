package xapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// streamEventBatch decodes an event.from answer read from r one event at a
// time: the raw XML of a busy pool's batch can be tens of megabytes, its
// decoded events a fraction of it, and only a window of the XML is held.
func streamEventBatch(r io.Reader, maxRecord int64, b *EventBatch) error {
	return streamEnvelope(r, maxRecord, "event.from", func(s *scanner, step func(func() error) error) error {
		for {
			var name string
			var events, done bool
			err := step(func() error {
				n, ok, err := s.nextMember()
				if err != nil {
					return err
				}
				if !ok {
					done = true
					if err := s.closeCompound(); err != nil {
						return err
					}
					return s.endMember()
				}
				pn, err := plainName(n)
				if err != nil {
					return err
				}
				name = string(pn)
				switch name {
				case "events":
					sc, c, err := s.value()
					if err != nil {
						return err
					}
					if c == "array" {
						events = true
						return nil
					}
					if c != "" || sc.typ != "" || len(sc.text) != 0 {
						return fmt.Errorf("%w: events is not an array", errSyntax)
					}
				case "valid_ref_counts":
					m, err := s.intMap()
					if err != nil {
						return err
					}
					b.ValidRefCounts = m
				case "token":
					t, err := s.str()
					if err != nil {
						return err
					}
					b.Token = t
				default:
					if err := s.skipValue(); err != nil {
						return err
					}
				}
				return s.endMember()
			})
			if err != nil {
				return fmt.Errorf("event.from %s: %w", name, err)
			}
			if done {
				return nil
			}
			for events {
				err := step(func() error {
					ok, err := s.nextElem()
					if err != nil {
						return err
					}
					if !ok {
						events = false
						if err := s.closeCompound(); err != nil {
							return err
						}
						return s.endMember()
					}
					var e Event
					if err := s.decodeEvent(&e); err != nil {
						return err
					}
					b.Events = append(b.Events, e)
					return nil
				})
				if err != nil {
					return fmt.Errorf("event.from events: %w", err)
				}
			}
		}
	})
}

// maxEventsHint bounds the room set aside for an answer before it is read
// (4.5 MiB of Event): one huge catch-up batch must not make every later,
// small one reserve as much.
const maxEventsHint = 1 << 16

// eventFromStream is EventFrom over XML-RPC with the answer decoded as it
// arrives (see streamEventBatch).
func (c *Client) eventFromStream(ctx context.Context, args []any, timeout time.Duration) (*EventBatch, error) {
	base, _ := c.current()
	method := "event.from"
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := base.JoinPath(c.path).String()
	body, err := encodeXMLRPC(method, args)
	if err != nil {
		return nil, err
	}
	resp, err := c.post(ctx, u, method, "text/xml", body)
	if err != nil {
		return nil, err
	}
	defer closeBody(resp.Body)
	if err := checkHTTP(resp, u, method); err != nil {
		return nil, err
	}
	var b EventBatch
	if n := c.lastEvents.Load(); n > 0 {
		b.Events = make([]Event, 0, min(n+n/4, maxEventsHint))
	}
	r := &countingReader{r: resp.Body, limit: c.cfg.MaxResponseBytes, url: u, method: method}
	err = streamEventBatch(r, c.cfg.MaxRecordBytes, &b)
	if err == nil {
		c.lastEvents.Store(int64(len(b.Events)))
		return &b, nil
	}
	var xe *Error
	var tl *TooLargeError
	var te *TransportError
	switch {
	case errors.As(err, &xe):
		return nil, xe
	case errors.As(err, &tl):
		tl.URL, tl.Method = u, method
		return nil, tl
	case errors.As(err, &te):
		return nil, ctxErr(ctx, te)
	case ctx.Err() != nil:
		return nil, &TransportError{URL: u, Method: method, Err: fmt.Errorf("call timed out (server slow or stalled): %w", err)}
	}
	return nil, &ProtocolError{URL: u, Method: method, StatusCode: resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"), Reason: "unparseable answer", Err: err}
}

// DecodeEventFrom decodes an event.from answer (an XML-RPC
// <methodResponse>) read from r the way the client decodes it off the wire,
// one event at a time, no event larger than 8 MiB of XML. It is for tools
// and benchmarks that replay recorded answers; a <fault> comes back as
// *Error.
func DecodeEventFrom(r io.Reader) (*EventBatch, error) {
	var b EventBatch
	if err := streamEventBatch(r, 8<<20, &b); err != nil {
		var xe *Error
		if errors.As(err, &xe) {
			return nil, xe
		}
		return nil, err
	}
	return &b, nil
}

// closeBody reads what is left of an answer the decoder stopped short of
// (the newline after </methodResponse>, up to a bound) before closing it:
// net/http reuses a connection only when its body was read to the end, and
// a new TLS handshake for every event.from cost more than decoding it.
func closeBody(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	body.Close()
}
