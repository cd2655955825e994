package xapisim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
	"time"
)

// Wire values. The encoder understands exactly these Go types, which mirror
// ocaml-rpc's Rpc.t as xapi uses it:
//
//	string            untyped <value>text</value>
//	Int               untyped <value>123</value> (XenAPI int, 64-bit)
//	I4                <value><i4>12</i4></value> (only valid_ref_counts)
//	bool              <boolean>
//	float64           <double> printed %.16g
//	time.Time         <dateTime.iso8601>YYYYMMDDTHH:MM:SSZ
//	[]string, []any   <array>
//	map[string]string <struct>, members sorted by name
//	Struct            <struct>, members in the given order
//	nil               <nil/> (xapi never sends it for API values)
type (
	// Int is a XenAPI int: sent untyped, as a string of digits.
	Int int64
	// I4 is a 32-bit int, sent typed (<i4>).
	I4 int32
	// Struct is an ordered XML-RPC struct.
	Struct []Member
	// Member is one struct member.
	Member struct {
		Name  string
		Value any
	}
)

// DateTimeLayout is xapi's datetime text (no hyphens, seconds, Z).
const DateTimeLayout = "20060102T15:04:05Z"

// FormatDateTime renders t as xapi does.
func FormatDateTime(t time.Time) string { return t.UTC().Format(DateTimeLayout) }

// Get returns the value of member name, or nil.
func (s Struct) Get(name string) any {
	for _, m := range s {
		if m.Name == name {
			return m.Value
		}
	}
	return nil
}

// escapeText is ocaml-rpc's Xmlrpc.encode: < > & " escaped, control
// characters other than tab, LF and CR dropped, every other byte kept.
func escapeText(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '>':
			b.WriteString("&gt;")
		case c == '<':
			b.WriteString("&lt;")
		case c == '&':
			b.WriteString("&amp;")
		case c == '"':
			b.WriteString("&quot;")
		case c >= 0x20 || c == '\t' || c == '\n' || c == '\r':
			b.WriteByte(c)
		}
	}
}

// formatDouble is C's %.16g, which Go's 'g' with precision 16 matches
// (trailing zeros dropped, two-digit exponent).
func formatDouble(f float64) string { return strconv.FormatFloat(f, 'g', 16, 64) }

// writeXMLValue appends v as an ocaml-rpc <value>. Member names are written
// as is, without escaping, as ocaml-rpc does.
func writeXMLValue(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("<value><nil/></value>")
	case string:
		b.WriteString("<value>")
		escapeText(b, x)
		b.WriteString("</value>")
	case Int:
		b.WriteString("<value>")
		b.WriteString(strconv.FormatInt(int64(x), 10))
		b.WriteString("</value>")
	case int:
		writeXMLValue(b, Int(x))
	case I4:
		b.WriteString("<value><i4>")
		b.WriteString(strconv.FormatInt(int64(x), 10))
		b.WriteString("</i4></value>")
	case bool:
		if x {
			b.WriteString("<value><boolean>1</boolean></value>")
		} else {
			b.WriteString("<value><boolean>0</boolean></value>")
		}
	case float64:
		b.WriteString("<value><double>")
		b.WriteString(formatDouble(x))
		b.WriteString("</double></value>")
	case time.Time:
		b.WriteString("<value><dateTime.iso8601>")
		b.WriteString(FormatDateTime(x))
		b.WriteString("</dateTime.iso8601></value>")
	case []string:
		b.WriteString("<value><array><data>")
		for _, s := range x {
			writeXMLValue(b, s)
		}
		b.WriteString("</data></array></value>")
	case []any:
		b.WriteString("<value><array><data>")
		for _, e := range x {
			writeXMLValue(b, e)
		}
		b.WriteString("</data></array></value>")
	case map[string]string:
		b.WriteString("<value><struct>")
		for _, k := range sortedKeys(x) {
			b.WriteString("<member><name>")
			b.WriteString(k)
			b.WriteString("</name>")
			writeXMLValue(b, x[k])
			b.WriteString("</member>")
		}
		b.WriteString("</struct></value>")
	case Struct:
		b.WriteString("<value><struct>")
		for _, m := range x {
			if m.Value == nil {
				continue // absent field: member omitted
			}
			b.WriteString("<member><name>")
			b.WriteString(m.Name)
			b.WriteString("</name>")
			writeXMLValue(b, m.Value)
			b.WriteString("</member>")
		}
		b.WriteString("</struct></value>")
	default:
		panic(fmt.Sprintf("xapisim: cannot encode %T", v))
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

const xmlResponseHead = `<?xml version="1.0"?><methodResponse><params><param>`
const xmlResponseTail = `</param></params></methodResponse>`

// XMLSuccess renders xapi's success envelope {Status, Value}.
func XMLSuccess(v any) []byte {
	var b bytes.Buffer
	// Sized like the last answer: event.from answers run to megabytes, and
	// growing the buffer by doubling (clearing each new one) cost the
	// simulator more than rendering them.
	b.Grow(int(min(lastXMLSize.Load(), 4<<20)) + 4096)
	b.WriteString(xmlResponseHead)
	writeXMLValue(&b, Struct{{"Status", "Success"}, {"Value", v}})
	b.WriteString(xmlResponseTail)
	lastXMLSize.Store(int64(b.Len()))
	return b.Bytes()
}

var lastXMLSize atomic.Int64

// XMLFailure renders xapi's failure envelope {Status, ErrorDescription}.
func XMLFailure(code string, params ...string) []byte {
	var b bytes.Buffer
	b.WriteString(xmlResponseHead)
	writeXMLValue(&b, Struct{{"Status", "Failure"}, {"ErrorDescription", append([]string{code}, params...)}})
	b.WriteString(xmlResponseTail)
	return b.Bytes()
}

// XMLBare renders a reply without the envelope (system.listMethods).
func XMLBare(v any) []byte {
	var b bytes.Buffer
	b.WriteString(xmlResponseHead)
	writeXMLValue(&b, v)
	b.WriteString(xmlResponseTail)
	return b.Bytes()
}

// XMLFragment is Xmlrpc.to_string: the value alone, as stored in task.result.
func XMLFragment(v any) string {
	var b bytes.Buffer
	writeXMLValue(&b, v)
	return b.String()
}

// writeJSONValue renders v for JSON-RPC: ints and floats as numbers,
// datetimes as xapi's text, maps and structs as objects.
func writeJSONValue(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case string:
		writeJSONString(b, x)
	case Int:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int:
		b.WriteString(strconv.Itoa(x))
	case I4:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case float64:
		b.WriteString(formatDouble(x))
	case time.Time:
		writeJSONString(b, FormatDateTime(x))
	case []string:
		b.WriteByte('[')
		for i, s := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, s)
		}
		b.WriteByte(']')
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONValue(b, e)
		}
		b.WriteByte(']')
	case map[string]string:
		b.WriteByte('{')
		for i, k := range sortedKeys(x) {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, k)
			b.WriteByte(':')
			writeJSONString(b, x[k])
		}
		b.WriteByte('}')
	case Struct:
		b.WriteByte('{')
		first := true
		for _, m := range x {
			if m.Value == nil {
				continue
			}
			if !first {
				b.WriteByte(',')
			}
			first = false
			writeJSONString(b, m.Name)
			b.WriteByte(':')
			writeJSONValue(b, m.Value)
		}
		b.WriteByte('}')
	default:
		panic(fmt.Sprintf("xapisim: cannot encode %T", v))
	}
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s)
	b.Write(enc)
}

// JSONReply renders a JSON-RPC reply for req: a result, or an error list
// (code first).
func JSONReply(req *Request, result any, errDesc []string) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	if req.JSONVersion == "2.0" {
		b.WriteString(`"jsonrpc":"2.0",`)
		if errDesc != nil {
			b.WriteString(`"error":{"code":1,"message":`)
			writeJSONString(&b, errDesc[0])
			b.WriteString(`,"data":`)
			writeJSONValue(&b, append([]string{}, errDesc[1:]...))
			b.WriteString(`}`)
		} else {
			b.WriteString(`"result":`)
			writeJSONValue(&b, result)
		}
	} else {
		if errDesc != nil {
			b.WriteString(`"result":null,"error":`)
			writeJSONValue(&b, errDesc)
		} else {
			b.WriteString(`"result":`)
			writeJSONValue(&b, result)
			b.WriteString(`,"error":null`)
		}
	}
	b.WriteString(`,"id":`)
	b.Write(req.ID)
	b.WriteByte('}')
	return b.Bytes()
}
