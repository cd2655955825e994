package xapi

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

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
// it: tags are read one by one, and only one record member at a time
// (at most maxRecord bytes) is buffered and handed to the scanner. So a
// 64,000-VM pool costs the size of one VM record, not of the document.
func streamRecords(r io.Reader, maxRecord int64, fn func(ref string, snap *Snapshot) error) error {
	pr := &pieceReader{r: bufio.NewReaderSize(r, 64<<10), max: maxRecord}
	const (
		capNone = iota
		capEnvMember
		capRecord
		capFault
	)
	var (
		depth    int
		capKind  = capNone
		capDepth int
		capBuf   []byte
		inValue  bool
		started  bool
		finished bool
		status   string
		desc     []string
	)
	for {
		p, err := pr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name, end, empty, misc := pieceTag(p)
		if misc {
			continue
		}
		if !started {
			if end || string(name) != "methodResponse" {
				return fmt.Errorf("%w: document starts with <%s>, not <methodResponse>", errSyntax, name)
			}
			started = true
		}
		if finished {
			return fmt.Errorf("%w: data after </methodResponse>", errSyntax)
		}
		if capKind == capNone && !end && !empty {
			switch {
			case depth == 5 && string(name) == "member":
				capKind, capDepth, capBuf = capEnvMember, depth, capBuf[:0]
			case depth == 8 && inValue && string(name) == "member":
				capKind, capDepth, capBuf = capRecord, depth, capBuf[:0]
			case depth == 1 && string(name) == "fault":
				capKind, capDepth, capBuf = capFault, depth, capBuf[:0]
			}
		}
		if capKind != capNone {
			if int64(len(capBuf)+len(p)) > maxRecord {
				return &TooLargeError{What: "record", Limit: maxRecord}
			}
			capBuf = append(capBuf, p...)
		}
		switch {
		case empty:
		case end:
			depth--
			if depth < 0 {
				return fmt.Errorf("%w: unbalanced </%s>", errSyntax, name)
			}
			if depth == 0 {
				finished = true
			}
		default:
			depth++
		}
		if capKind == capEnvMember && end && string(name) == "name" {
			s := &scanner{b: trimToTag(capBuf)}
			n, ok, err := s.nextMember()
			if err != nil || !ok {
				return fmt.Errorf("%w: bad envelope member", errSyntax)
			}
			if string(n) == "Value" {
				// Stream the Value's records instead of buffering it.
				capKind, inValue = capNone, true
			}
			continue
		}
		if capKind == capNone || depth != capDepth {
			continue
		}
		s := &scanner{b: trimToTag(capBuf)}
		switch capKind {
		case capRecord:
			if _, err := s.decodeRecordMember(fn); err != nil {
				return err
			}
		case capEnvMember:
			n, _, err := s.nextMember()
			if err != nil {
				return err
			}
			switch string(n) {
			case "Status":
				status, err = s.str()
			case "ErrorDescription":
				desc, err = s.strSlice(nil)
			default:
				err = s.skipValue()
			}
			if err != nil {
				return err
			}
		case capFault:
			var f FaultError
			if err := xmlrpc.Response(capBuf).Unmarshal(&f); err != nil {
				return fmt.Errorf("%w: unreadable <fault>: %v", errSyntax, err)
			}
			return &f
		}
		capKind = capNone
	}
	if !finished {
		return fmt.Errorf("%w: document ends early (truncated answer)", errSyntax)
	}
	switch status {
	case "Success":
		return nil
	case "Failure":
		return newError(desc)
	}
	return fmt.Errorf("%w: envelope has no valid Status (%q)", errSyntax, status)
}

// trimToTag drops text before the first tag of a captured element.
func trimToTag(b []byte) []byte {
	if i := bytes.IndexByte(b, '<'); i > 0 {
		return b[i:]
	}
	return b
}

// pieceReader yields the input in pieces of "text<tag>".
type pieceReader struct {
	r   *bufio.Reader
	max int64
	buf []byte
}

func (p *pieceReader) next() ([]byte, error) {
	p.buf = p.buf[:0]
	for {
		chunk, err := p.r.ReadSlice('>')
		switch {
		case err == bufio.ErrBufferFull:
			p.buf = append(p.buf, chunk...)
			if int64(len(p.buf)) > p.max {
				return nil, &TooLargeError{What: "record", Limit: p.max}
			}
			continue
		case err == io.EOF:
			if len(p.buf)+len(chunk) == 0 || len(bytes.TrimSpace(append(p.buf, chunk...))) == 0 {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("%w: document ends inside a tag or text", errSyntax)
		case err != nil:
			return nil, err
		}
		if len(p.buf) > 0 {
			p.buf = append(p.buf, chunk...)
			chunk = p.buf
		}
		// A comment may hold '>'; keep reading to its end.
		if i := bytes.IndexByte(chunk, '<'); i >= 0 && bytes.HasPrefix(chunk[i:], []byte("<!--")) && !bytes.HasSuffix(chunk, []byte("-->")) {
			if len(p.buf) == 0 {
				p.buf = append(p.buf, chunk...)
			}
			continue
		}
		if bytes.IndexByte(chunk, '<') < 0 {
			return nil, fmt.Errorf("%w: '>' outside a tag", errSyntax)
		}
		return chunk, nil
	}
}

// pieceTag parses the tag that ends a piece.
func pieceTag(p []byte) (name []byte, end, empty, misc bool) {
	i := bytes.IndexByte(p, '<')
	t := p[i+1 : len(p)-1]
	if len(t) > 0 && (t[0] == '?' || t[0] == '!') {
		return nil, false, false, true
	}
	if len(t) > 0 && t[0] == '/' {
		end, t = true, t[1:]
	}
	if len(t) > 0 && t[len(t)-1] == '/' {
		empty, t = true, t[:len(t)-1]
	}
	if k := bytes.IndexAny(t, " \t\r\n"); k >= 0 {
		t = t[:k]
	}
	return t, end, empty, false
}
