package audit

import (
	"strings"
	"unsafe"
)

// sexprParser reads the message after the header: the 8-element
// s-expression of rbac_audit.ml sexpr_of, written by SExpr.string_of
// (strings in single quotes, \' and \\ escaped, one space between
// elements) and, since March 2020, escaped again as a whole by debug.ml.
// Both layers are undone in one pass; a value without a backslash is a
// substring of the input, any other is decoded into l.scratch, which
// Parse sized to hold the whole message so it never moves.
type sexprParser struct {
	s    string
	i    int
	mode Escaping
	base int // offset of s in the line, for error positions
	l    *Line
}

// maxDepth bounds nested argument lists (a dictionary-valued parameter
// nests once; anything deeper is not xapi's).
const maxDepth = 8

var elementNames = [8]string{"trackid", "subject id", "subject name", "decision", "result", "call type", "action", "args"}

func (p *sexprParser) errAt(part, reason string) *ParseError {
	return perr(part, p.base+p.i, reason)
}

// unit decodes the outer escaping at i: the byte it stands for and how many
// input bytes it takes. A backslash that starts no outer sequence is kept
// as it is (old builds, or text that was never escaped).
func (p *sexprParser) unit(i int) (byte, int) {
	c := p.s[i]
	if c != '\\' || p.mode == EscapeInner {
		return c, 1
	}
	if i+1 < len(p.s) {
		switch p.s[i+1] {
		case '\\':
			return '\\', 2
		case 'x':
			if i+3 < len(p.s) && isHex(p.s[i+2]) && isHex(p.s[i+3]) {
				return unhex(p.s[i+2])<<4 | unhex(p.s[i+3]), 4
			}
		}
	}
	return '\\', 1
}

func (p *sexprParser) spaces() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

// peek returns the decoded byte at the cursor (0 at the end).
func (p *sexprParser) peek() byte {
	if p.i >= len(p.s) {
		return 0
	}
	b, _ := p.unit(p.i)
	return b
}

func (p *sexprParser) expect(c byte, part, what string) *ParseError {
	p.spaces()
	if p.i >= len(p.s) {
		return p.errAt(part, "line ends where "+what+" was expected")
	}
	b, w := p.unit(p.i)
	if b != c {
		return p.errAt(part, "want "+what+", got "+describe(b))
	}
	p.i += w
	return nil
}

func describe(b byte) string {
	switch {
	case b == '\'' || b == '"':
		return "a string"
	case b == '(':
		return "a list"
	case b == ')':
		return "the end of the list"
	case b >= 0x21 && b < 0x7f:
		return "'" + string(rune(b)) + "'"
	}
	return "byte 0x" + string("0123456789ABCDEF"[b>>4]) + string("0123456789ABCDEF"[b&15])
}

// str reads one quoted string ('…' as SExpr writes it; "…" as its reader
// also accepts).
func (p *sexprParser) str(part string) (string, *ParseError) {
	p.spaces()
	if p.i >= len(p.s) {
		return "", p.errAt(part, "line ends where a quoted string was expected")
	}
	q, w := p.unit(p.i)
	if q != '\'' && q != '"' {
		return "", p.errAt(part, "want a quoted string, got "+describe(q))
	}
	start := p.i + w
	// Fast path: no backslash before the closing quote.
	for j := start; j < len(p.s); j++ {
		c := p.s[j]
		if c == q {
			p.i = j + 1
			return p.s[start:j], nil
		}
		if c == '\\' {
			break
		}
	}
	l := p.l
	from := len(l.scratch)
	i := start
	for {
		if i >= len(p.s) {
			p.i = start - w
			return "", p.errAt(part, "string never closed (a line cut short?)")
		}
		b, w := p.unit(i)
		i += w
		if b == '\\' {
			// The s-expression's escape: the next (outer-decoded) byte is
			// taken as it is (sExpr.ml unescape).
			if i >= len(p.s) {
				p.i = start - 1
				return "", p.errAt(part, "string never closed (ends in a backslash)")
			}
			b, w = p.unit(i)
			i += w
			l.scratch = append(l.scratch, b)
			continue
		}
		if b == q {
			break
		}
		l.scratch = append(l.scratch, b)
	}
	p.i = i
	n := len(l.scratch) - from
	if n == 0 {
		return "", nil
	}
	// scratch has room for the whole message (see Parse): it was not moved.
	return unsafe.String(&l.scratch[from], n), nil
}

// line parses the whole s-expression into p.l.
func (p *sexprParser) line() error {
	l := p.l
	p.spaces()
	if p.i >= len(p.s) {
		return p.errAt("sexpr", "no s-expression after the header")
	}
	if err := p.expect('(', "sexpr", "'(' opening the s-expression"); err != nil {
		return err
	}
	var el [7]string
	for k := 0; k < 7; k++ {
		p.spaces()
		switch p.peek() {
		case ')':
			return p.errAt("sexpr", itoa(k)+" elements, want 8 ("+strings.Join(elementNames[:], ", ")+")")
		case '(':
			return p.errAt(elementNames[k], "element "+itoa(k+1)+" must be a string, got a list")
		}
		v, err := p.str(elementNames[k])
		if err != nil {
			return err
		}
		el[k] = v
	}
	p.spaces()
	switch p.peek() {
	case '(':
	case ')':
		return p.errAt("sexpr", "7 elements, want 8 (the argument list is missing)")
	case 0:
		return p.errAt("sexpr", "line ends before the argument list")
	default:
		return p.errAt("args", "element 8 must be the argument list, got "+describe(p.peek()))
	}
	args, err := p.args(l.Args, 0)
	if err != nil {
		return err
	}
	l.Args = args
	p.spaces()
	if p.peek() != ')' {
		if p.i >= len(p.s) {
			return p.errAt("sexpr", "')' closing the s-expression is missing (a line cut short?)")
		}
		return p.errAt("sexpr", "more than 8 elements")
	}
	_, w := p.unit(p.i)
	p.i += w
	p.spaces()
	if p.i < len(p.s) {
		return p.errAt("sexpr", "text after the s-expression")
	}
	return p.fields(el)
}

// args reads "(" arg* ")" where arg = (name value-or-args uuid ref).
func (p *sexprParser) args(into []Arg, depth int) ([]Arg, *ParseError) {
	if depth >= maxDepth {
		return nil, p.errAt("args", "argument lists nested too deep")
	}
	if err := p.expect('(', "args", "'(' opening the argument list"); err != nil {
		return nil, err
	}
	for n := 1; ; n++ {
		p.spaces()
		switch p.peek() {
		case ')':
			_, w := p.unit(p.i)
			p.i += w
			return into, nil
		case '(':
		case 0:
			return nil, p.errAt("args", "line ends inside the argument list (a line cut short?)")
		default:
			return nil, p.errAt("args", "argument "+itoa(n)+": want (name value uuid ref), got "+describe(p.peek()))
		}
		_, w := p.unit(p.i)
		p.i += w
		var a Arg
		var err *ParseError
		if a.Name, err = p.str("args"); err != nil {
			return nil, err
		}
		p.spaces()
		if p.peek() == '(' {
			if a.Args, err = p.args(nil, depth+1); err != nil {
				return nil, err
			}
			if a.Args == nil {
				a.Args = []Arg{}
			}
		} else if a.Value, err = p.str("args"); err != nil {
			return nil, err
		}
		if a.UUID, err = p.str("args"); err != nil {
			return nil, err
		}
		if a.Ref, err = p.str("args"); err != nil {
			return nil, err
		}
		p.spaces()
		if p.peek() != ')' {
			return nil, p.errAt("args", "argument "+itoa(n)+" ("+a.Name+"): more than 4 elements or ')' missing")
		}
		_, w = p.unit(p.i)
		p.i += w
		into = append(into, a)
	}
}

// fields checks and stores the seven string elements.
func (p *sexprParser) fields(el [7]string) error {
	l := p.l
	tid, ok := strings.CutPrefix(el[0], "trackid=")
	if !ok {
		return perr("trackid", -1, "element 1 "+quote(el[0])+" does not start with trackid=")
	}
	l.TrackID, l.SubjectID, l.SubjectName = tid, el[1], el[2]
	switch el[3] {
	case "ALLOWED":
		l.Decision = Allowed
	case "DENIED":
		l.Decision = Denied
	default:
		return perr("decision", -1, "element 4 "+quote(el[3])+" is neither ALLOWED nor DENIED")
	}
	res := el[4]
	switch {
	case res == "" && l.Decision == Denied:
		l.Outcome = NoOutcome
	case res == "OK" && l.Decision == Allowed:
		l.Outcome = OK
	case res == "ERROR" && l.Decision == Allowed:
		l.Outcome = Error
	case strings.HasPrefix(res, "ERROR:") && l.Decision == Allowed:
		l.Outcome = Error
		l.ErrorText = res[len("ERROR:"):]
		l.ErrorCode = l.ErrorText
		if i := strings.Index(l.ErrorText, ": ["); i >= 0 {
			l.ErrorCode = l.ErrorText[:i]
		}
	default:
		return perr("result", -1, "element 5 "+quote(res)+" does not fit a "+l.Decision.String()+
			" line (want OK or ERROR:… when ALLOWED, '' when DENIED)")
	}
	switch el[5] {
	case "API":
		l.CallType = API
	case "HTTP":
		l.CallType = HTTP
	default:
		return perr("calltype", -1, "element 6 "+quote(el[5])+" is neither API nor HTTP")
	}
	if el[6] == "" {
		return perr("action", -1, "element 7 (the action) is empty")
	}
	l.Action = el[6]
	return nil
}
