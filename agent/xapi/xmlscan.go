package xapi

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// scanner walks an XML-RPC value held in memory without building tokens.
// encoding/xml (and so kolo) allocates for every token and reflects for every
// struct; on event.from batches that caps decoding near 10k events/s (see
// README, "Decoding speed"). XML-RPC needs only a tiny subset of XML, so the
// hot path (EventBatch, Snapshot, get_all_records) is decoded here, and kolo
// stays the decoder of every other result and the oracle in the fuzz test.
type scanner struct {
	b []byte
	i int
}

var errSyntax = errors.New("malformed XML-RPC")

func (s *scanner) fail(what string) error {
	near := s.b[s.i:]
	if len(near) > 40 {
		near = near[:40]
	}
	return fmt.Errorf("%w: %s at byte %d near %q", errSyntax, what, s.i, near)
}

// skipMisc skips whitespace, comments and processing instructions.
func (s *scanner) skipMisc() error {
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			s.i++
		case c == '<' && bytes.HasPrefix(s.b[s.i:], []byte("<?")):
			j := bytes.Index(s.b[s.i:], []byte("?>"))
			if j < 0 {
				return s.fail("unterminated <?")
			}
			s.i += j + 2
		case c == '<' && bytes.HasPrefix(s.b[s.i:], []byte("<!--")):
			j := bytes.Index(s.b[s.i:], []byte("-->"))
			if j < 0 {
				return s.fail("unterminated comment")
			}
			s.i += j + 3
		default:
			return nil
		}
	}
	return nil
}

// tag reads the next tag after optional misc. It returns the name, whether it
// is an end tag, and whether it closes itself (<value/>). Attributes are
// ignored (XML-RPC has none). A hand loop: tags are short, and calling
// bytes.IndexByte/IndexAny per tag cost more than the scan itself.
func (s *scanner) tag() (name []byte, end, empty bool, err error) {
	b, i := s.b, s.i
	if i >= len(b) || b[i] != '<' || (i+1 < len(b) && (b[i+1] == '?' || b[i+1] == '!')) {
		if err = s.skipMisc(); err != nil {
			return
		}
		i = s.i
		if i >= len(b) || b[i] != '<' {
			return nil, false, false, s.fail("expected a tag")
		}
	}
	j := i + 1
	if j < len(b) && b[j] == '/' {
		end = true
		j++
	}
	start := j
	for j < len(b) {
		c := b[j]
		if c == '>' || c == '/' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			break
		}
		j++
	}
	name = b[start:j]
	for j < len(b) && b[j] != '>' {
		j++
	}
	if j >= len(b) {
		return nil, false, false, s.fail("unterminated tag")
	}
	empty = b[j-1] == '/' && j-1 >= start
	s.i = j + 1
	if len(name) == 0 || (end && empty) {
		s.i = i
		return nil, false, false, s.fail("bad tag")
	}
	return name, end, empty, nil
}

// at reports whether the bytes at i are exactly "<name>" (or "</name>"
// with end): the compact form xapi writes, matched without parsing a tag.
func (s *scanner) at(i int, name string, end bool) int {
	b := s.b
	if i >= len(b) || b[i] != '<' {
		return 0
	}
	j := i + 1
	if end {
		if j >= len(b) || b[j] != '/' {
			return 0
		}
		j++
	}
	if len(b)-j <= len(name) || string(b[j:j+len(name)]) != name || b[j+len(name)] != '>' {
		return 0
	}
	return j + len(name) + 1 - i
}

func (s *scanner) expectStart(name string) (empty bool, err error) {
	if n := s.at(s.i, name, false); n > 0 {
		s.i += n
		return false, nil
	}
	at := s.i
	n, end, empty, err := s.tag()
	if err != nil {
		return false, err
	}
	if end || string(n) != name {
		s.i = at
		return false, s.fail("expected <" + name + ">")
	}
	return empty, nil
}

func (s *scanner) expectEnd(name string) error {
	if n := s.at(s.i, name, true); n > 0 {
		s.i += n
		return nil
	}
	at := s.i
	n, end, _, err := s.tag()
	if err != nil {
		return err
	}
	if !end || string(n) != name {
		s.i = at
		return s.fail("expected </" + name + ">")
	}
	return nil
}

// text returns the raw character data up to the next '<'.
func (s *scanner) text() []byte {
	j := bytes.IndexByte(s.b[s.i:], '<')
	if j < 0 {
		j = len(s.b) - s.i
	}
	t := s.b[s.i : s.i+j]
	s.i += j
	return t
}

// scalar is one decoded XML-RPC value that is not a struct or array.
type scalar struct {
	typ  string // "" for untyped (XAPI's strings and ints)
	text []byte // still escaped
}

// value opens a <value>. If the value is a scalar it is consumed entirely,
// including </value>, and returned with compound == "". If it is a struct or
// array, compound names it and the scanner stands just after <struct> or
// <data>; the caller iterates and then calls closeCompound.
func (s *scanner) value() (sc scalar, compound string, err error) {
	empty, err := s.expectStart("value")
	if err != nil || empty {
		return sc, "", err
	}
	t := s.text()
	if s.i >= len(s.b) {
		return sc, "", s.fail("unterminated <value>")
	}
	if k := s.at(s.i, "value", true); k > 0 { // an untyped scalar, xapi's usual
		s.i += k
		// Kept whole: xapi writes a string as <value>text</value>, never
		// indented (ocaml-rpc's Xmlrpc.to_string), so spaces around it are
		// part of it, as JSON-RPC gives them. kolo/xmlrpc trims them.
		sc.text = t
		return sc, "", nil
	}
	n, end, empty, err := s.tag()
	if err != nil {
		return sc, "", err
	}
	if end {
		if string(n) != "value" {
			return sc, "", s.fail("mismatched </" + string(n) + ">")
		}
		sc.text = t
		return sc, "", nil
	}
	if len(bytes.TrimSpace(t)) != 0 {
		// kolo takes text before a type tag as an untyped string; so do we.
		return sc, "", s.fail("text before type tag")
	}
	switch string(n) {
	case "struct":
		if empty {
			return sc, "", s.expectEnd("value")
		}
		return sc, "struct", nil
	case "array":
		if empty {
			return sc, "", s.expectEnd("value")
		}
		de, err := s.expectStart("data")
		if err != nil {
			return sc, "", err
		}
		if de {
			if err = s.expectEnd("array"); err != nil {
				return sc, "", err
			}
			return sc, "", s.expectEnd("value")
		}
		return sc, "array", nil
	}
	sc.typ = string(typeName(n))
	if !empty {
		sc.text = s.text()
		if err = s.expectEnd(sc.typ); err != nil {
			return sc, "", err
		}
	}
	return sc, "", s.expectEnd("value")
}

// typeName avoids allocating for the type tags XML-RPC knows.
func typeName(n []byte) string {
	for _, k := range []string{"string", "i4", "int", "i8", "boolean", "double", "dateTime.iso8601", "base64", "nil"} {
		if string(n) == k {
			return k
		}
	}
	return string(n)
}

// nextMember reads "<member><name>N</name>" and returns N (escaped), or
// ok=false at </struct>.
func (s *scanner) nextMember() (name []byte, ok bool, err error) {
	// The compact form first: <member><name>N</name>.
	if n := s.at(s.i, "member", false); n > 0 {
		if m := s.at(s.i+n, "name", false); m > 0 {
			i := s.i + n + m
			if k := bytes.IndexByte(s.b[i:], '<'); k >= 0 {
				if e := s.at(i+k, "name", true); e > 0 {
					s.i = i + k + e
					return s.b[i : i+k], true, nil
				}
			}
		}
	}
	at := s.i
	n, end, _, err := s.tag()
	if err != nil {
		return nil, false, err
	}
	if end && string(n) == "struct" {
		return nil, false, nil
	}
	if end || string(n) != "member" {
		s.i = at
		return nil, false, s.fail("expected <member>")
	}
	if _, err = s.expectStart("name"); err != nil {
		return nil, false, err
	}
	name = s.text()
	if err = s.expectEnd("name"); err != nil {
		return nil, false, err
	}
	return name, true, nil
}

func (s *scanner) endMember() error { return s.expectEnd("member") }

// nextElem reports whether another <value> follows inside <data>; at
// </data></array> it consumes them and returns false.
func (s *scanner) nextElem() (bool, error) {
	if err := s.skipMisc(); err != nil {
		return false, err
	}
	if bytes.HasPrefix(s.b[s.i:], []byte("</data")) {
		if err := s.expectEnd("data"); err != nil {
			return false, err
		}
		return false, s.expectEnd("array")
	}
	return true, nil
}

// closeCompound consumes the </value> after a struct or array.
func (s *scanner) closeCompound() error { return s.expectEnd("value") }

// skipValue consumes one whole <value> of any shape. Most of a VM record
// is members we do not keep, so this only counts <value> nesting instead
// of parsing what it skips.
func (s *scanner) skipValue() error {
	empty, err := s.expectStart("value")
	if err != nil || empty {
		return err
	}
	b, i, depth := s.b, s.i, 1
	for {
		k := bytes.IndexByte(b[i:], '<')
		if k < 0 {
			s.i = len(b)
			return s.fail("unterminated <value>")
		}
		i += k
		switch {
		case bytes.HasPrefix(b[i:], []byte("</value>")):
			i += len("</value>")
			if depth--; depth == 0 {
				s.i = i
				return nil
			}
		case bytes.HasPrefix(b[i:], []byte("<value>")):
			i += len("<value>")
			depth++
		default:
			i++
		}
	}
}

func (s *scanner) skipCompound(c string) error {
	switch c {
	case "struct":
		for {
			_, ok, err := s.nextMember()
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			if err = s.skipValue(); err != nil {
				return err
			}
			if err = s.endMember(); err != nil {
				return err
			}
		}
	case "array":
		for {
			ok, err := s.nextElem()
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			if err = s.skipValue(); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	return s.closeCompound()
}

// unescape resolves XML entities; XAPI escapes < > & " only, but other
// servers may use &apos; or numeric references.
func unescape(t []byte) (string, error) {
	if bytes.IndexByte(t, '\r') >= 0 {
		// XML end-of-line handling: CRLF and lone CR read as LF, as
		// encoding/xml (and so kolo) reads them.
		t = bytes.ReplaceAll(bytes.ReplaceAll(t, []byte("\r\n"), []byte("\n")), []byte("\r"), []byte("\n"))
	}
	if bytes.IndexByte(t, '&') < 0 {
		return string(t), nil
	}
	var sb strings.Builder
	sb.Grow(len(t))
	for len(t) > 0 {
		k := bytes.IndexByte(t, '&')
		if k < 0 {
			sb.Write(t)
			break
		}
		sb.Write(t[:k])
		t = t[k:]
		semi := bytes.IndexByte(t, ';')
		if semi < 0 {
			return "", fmt.Errorf("%w: unterminated entity", errSyntax)
		}
		ent := string(t[1:semi])
		t = t[semi+1:]
		switch ent {
		case "lt":
			sb.WriteByte('<')
		case "gt":
			sb.WriteByte('>')
		case "amp":
			sb.WriteByte('&')
		case "quot":
			sb.WriteByte('"')
		case "apos":
			sb.WriteByte('\'')
		default:
			var r uint64
			var err error
			switch {
			case strings.HasPrefix(ent, "#x"):
				r, err = strconv.ParseUint(ent[2:], 16, 32)
			case strings.HasPrefix(ent, "#"):
				r, err = strconv.ParseUint(ent[1:], 10, 32)
			default:
				err = errors.New("unknown")
			}
			if err != nil || !utf8.ValidRune(rune(r)) {
				return "", fmt.Errorf("%w: bad entity &%s;", errSyntax, ent)
			}
			sb.WriteRune(rune(r))
		}
	}
	return sb.String(), nil
}

// Decoders of scalars into the Go types of Snapshot. They accept what kolo
// accepts for the same target, plus typed ints into strings (XAPI never sends
// them, other servers might).

func (sc scalar) str() (string, error) {
	switch sc.typ {
	case "", "string", "int", "i4", "i8", "base64":
		return unescape(sc.text)
	}
	return "", fmt.Errorf("%w: can't decode <%s> into a string", errSyntax, sc.typ)
}

func (sc scalar) boolean() (bool, error) {
	if sc.typ != "boolean" {
		return false, fmt.Errorf("%w: can't decode <%s> into a bool", errSyntax, sc.typ)
	}
	return strconv.ParseBool(string(sc.text))
}

func (sc scalar) float() (float64, error) {
	if sc.typ != "double" {
		return 0, fmt.Errorf("%w: can't decode <%s> into a float", errSyntax, sc.typ)
	}
	return strconv.ParseFloat(string(sc.text), 64)
}

func (sc scalar) integer() (int, error) {
	switch sc.typ {
	case "", "int", "i4", "i8":
		return strconv.Atoi(string(bytes.TrimSpace(sc.text)))
	}
	return 0, fmt.Errorf("%w: can't decode <%s> into an int", errSyntax, sc.typ)
}

// timeLayouts are kolo's, tried in kolo's order, so both decoders agree.
var timeLayouts = []string{"20060102T15:04:05", "20060102T15:04:05Z07:00", "2006-01-02T15:04:05", "2006-01-02T15:04:05Z07:00"}

func (sc scalar) time() (time.Time, error) {
	if sc.typ != "dateTime.iso8601" {
		return time.Time{}, fmt.Errorf("%w: can't decode <%s> into a time", errSyntax, sc.typ)
	}
	return parseXAPITime(string(sc.text))
}

func parseXAPITime(s string) (time.Time, error) {
	// xapi's own form, 20060102T15:04:05Z, read without time.Parse (which
	// allocated an error for the layout tried first on every timestamp).
	if t, ok := parseCompactUTC(s); ok {
		return t, nil
	}
	var err error
	for _, l := range timeLayouts {
		var t time.Time
		if t, err = time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}

// parseCompactUTC reads exactly "YYYYMMDDTHH:MM:SSZ" with values in range,
// as time.Parse would with kolo's second layout.
func parseCompactUTC(s string) (time.Time, bool) {
	if len(s) != 18 || s[8] != 'T' || s[11] != ':' || s[14] != ':' || s[17] != 'Z' {
		return time.Time{}, false
	}
	num := func(a, b int) (int, bool) {
		n := 0
		for _, c := range s[a:b] {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(4, 6)
	d, ok3 := num(6, 8)
	h, ok4 := num(9, 11)
	mi, ok5 := num(12, 14)
	se, ok6 := num(15, 17)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(mo), d, h, mi, se, 0, time.UTC)
	if t.Day() != d { // 31 April and the like: time.Parse refuses them
		return time.Time{}, false
	}
	return t, true
}
