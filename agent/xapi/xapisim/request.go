package xapisim

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Request parsing: xapi accepts typed and untyped values (ocaml-rpc
// Xmlrpc.Parser); anything it cannot parse is answered with HTTP 500.

// Request is a parsed XML-RPC or JSON-RPC call. Params hold string, int64,
// bool, float64, []any, map[string]any or nil (typed and untyped values are
// both accepted, as xapi's parser does; dateTime values arrive as strings).
type Request struct {
	Method string
	Params []any
	// JSON-RPC only.
	JSONVersion string // "" for 1.0, "2.0"
	ID          json.RawMessage
}

// ParseXMLRequest parses an XML-RPC methodCall.
func ParseXMLRequest(r io.Reader) (*Request, error) {
	d := xml.NewDecoder(r)
	d.Strict = true
	start, err := nextStart(d)
	if err != nil {
		return nil, err
	}
	if start.Name.Local != "methodCall" {
		return nil, fmt.Errorf("expected methodCall, got %s", start.Name.Local)
	}
	req := &Request{}
	for {
		t, err := nextStartOrEnd(d)
		if err != nil {
			return nil, err
		}
		if _, ok := t.(xml.EndElement); ok {
			break
		}
		se := t.(xml.StartElement)
		switch se.Name.Local {
		case "methodName":
			s, err := charData(d)
			if err != nil {
				return nil, err
			}
			req.Method = strings.TrimSpace(s)
		case "params":
			for {
				t, err := nextStartOrEnd(d)
				if err != nil {
					return nil, err
				}
				if _, ok := t.(xml.EndElement); ok {
					break
				}
				if p := t.(xml.StartElement); p.Name.Local != "param" {
					return nil, fmt.Errorf("expected param, got %s", p.Name.Local)
				}
				vs, err := nextStart(d)
				if err != nil {
					return nil, err
				}
				if vs.Name.Local != "value" {
					return nil, fmt.Errorf("expected value, got %s", vs.Name.Local)
				}
				v, err := parseValue(d)
				if err != nil {
					return nil, err
				}
				req.Params = append(req.Params, v)
				if err := endOf(d); err != nil { // </param>
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("unexpected element %s", se.Name.Local)
		}
	}
	if req.Method == "" {
		return nil, errors.New("missing methodName")
	}
	return req, nil
}

func nextStart(d *xml.Decoder) (xml.StartElement, error) {
	t, err := nextStartOrEnd(d)
	if err != nil {
		return xml.StartElement{}, err
	}
	se, ok := t.(xml.StartElement)
	if !ok {
		return xml.StartElement{}, errors.New("unexpected end element")
	}
	return se, nil
}

// nextStartOrEnd skips whitespace, comments and the prolog; other text is an
// error, as in ocaml-rpc's open_tag.
func nextStartOrEnd(d *xml.Decoder) (xml.Token, error) {
	for {
		t, err := d.Token()
		if err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch x := t.(type) {
		case xml.StartElement, xml.EndElement:
			return x, nil
		case xml.CharData:
			if len(bytes.TrimSpace(x)) != 0 {
				return nil, fmt.Errorf("unexpected text %q", string(x))
			}
		}
	}
}

func endOf(d *xml.Decoder) error {
	t, err := nextStartOrEnd(d)
	if err != nil {
		return err
	}
	if _, ok := t.(xml.EndElement); !ok {
		return errors.New("expected end element")
	}
	return nil
}

// charData reads text up to the end of the current element.
func charData(d *xml.Decoder) (string, error) {
	var sb strings.Builder
	for {
		t, err := d.Token()
		if err != nil {
			return "", err
		}
		switch x := t.(type) {
		case xml.CharData:
			sb.Write(x)
		case xml.EndElement:
			return sb.String(), nil
		case xml.StartElement:
			return "", fmt.Errorf("unexpected element %s in text", x.Name.Local)
		}
	}
}

const maxDepth = 64

// parseValue reads the content of a <value> whose start was consumed, and
// its end tag.
func parseValue(d *xml.Decoder) (any, error) { return parseValueDepth(d, 0) }

func parseValueDepth(d *xml.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("value nested too deeply")
	}
	var text strings.Builder
	for {
		t, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch x := t.(type) {
		case xml.CharData:
			text.Write(x)
		case xml.EndElement:
			return text.String(), nil // untyped: a string
		case xml.StartElement:
			if len(strings.TrimSpace(text.String())) != 0 {
				return nil, errors.New("text mixed with a typed value")
			}
			v, err := parseTyped(d, x.Name.Local, depth)
			if err != nil {
				return nil, err
			}
			return v, endOf(d) // </value>
		}
	}
}

func parseTyped(d *xml.Decoder, tag string, depth int) (any, error) {
	switch tag {
	case "string", "dateTime.iso8601", "base64":
		return charData(d)
	case "int", "i4", "i8":
		s, err := charData(d)
		if err != nil {
			return nil, err
		}
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad %s %q", tag, s)
		}
		return n, nil
	case "boolean":
		s, err := charData(d)
		if err != nil {
			return nil, err
		}
		return strings.TrimSpace(s) == "1", nil
	case "double":
		s, err := charData(d)
		if err != nil {
			return nil, err
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return nil, fmt.Errorf("bad double %q", s)
		}
		return f, nil
	case "nil":
		return nil, endOf(d)
	case "array":
		arr := []any{}
		t, err := nextStartOrEnd(d)
		if err != nil {
			return nil, err
		}
		if _, ok := t.(xml.EndElement); ok {
			return arr, nil // <array/>
		}
		if se := t.(xml.StartElement); se.Name.Local != "data" {
			return nil, fmt.Errorf("expected data, got %s", se.Name.Local)
		}
		for {
			t, err := nextStartOrEnd(d)
			if err != nil {
				return nil, err
			}
			if _, ok := t.(xml.EndElement); ok {
				break
			}
			if se := t.(xml.StartElement); se.Name.Local != "value" {
				return nil, fmt.Errorf("expected value, got %s", se.Name.Local)
			}
			v, err := parseValueDepth(d, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		return arr, endOf(d) // </array>
	case "struct":
		m := map[string]any{}
		for {
			t, err := nextStartOrEnd(d)
			if err != nil {
				return nil, err
			}
			if _, ok := t.(xml.EndElement); ok {
				return m, nil
			}
			if se := t.(xml.StartElement); se.Name.Local != "member" {
				return nil, fmt.Errorf("expected member, got %s", se.Name.Local)
			}
			ns, err := nextStart(d)
			if err != nil {
				return nil, err
			}
			if ns.Name.Local != "name" {
				return nil, fmt.Errorf("expected name, got %s", ns.Name.Local)
			}
			name, err := charData(d)
			if err != nil {
				return nil, err
			}
			vs, err := nextStart(d)
			if err != nil {
				return nil, err
			}
			if vs.Name.Local != "value" {
				return nil, fmt.Errorf("expected value, got %s", vs.Name.Local)
			}
			v, err := parseValueDepth(d, depth+1)
			if err != nil {
				return nil, err
			}
			m[name] = v
			if err := endOf(d); err != nil { // </member>
				return nil, err
			}
		}
	}
	return nil, fmt.Errorf("unknown value type %s", tag)
}

// ParseJSONRequest parses a JSON-RPC 1.0 or 2.0 request. A missing or null
// id is an error (xapi answers HTTP 500: no notifications).
func ParseJSONRequest(r io.Reader) (*Request, error) {
	var raw struct {
		JSONRPC string          `json:"jsonrpc"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params"`
		ID      json.RawMessage `json:"id"`
	}
	d := json.NewDecoder(r)
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		return nil, fmt.Errorf("malformed JSON-RPC request: %w", err)
	}
	if raw.Method == "" {
		return nil, errors.New("malformed JSON-RPC request: no method")
	}
	if len(raw.ID) == 0 || string(raw.ID) == "null" {
		return nil, errors.New("malformed JSON-RPC request: id missing or null")
	}
	req := &Request{Method: raw.Method, JSONVersion: raw.JSONRPC, ID: raw.ID}
	if len(raw.Params) > 0 && string(raw.Params) != "null" {
		pd := json.NewDecoder(bytes.NewReader(raw.Params))
		pd.UseNumber()
		var ps []any
		if err := pd.Decode(&ps); err != nil {
			return nil, fmt.Errorf("malformed JSON-RPC request: params: %w", err)
		}
		for _, p := range ps {
			req.Params = append(req.Params, fromJSON(p))
		}
	}
	return req, nil
}

func fromJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = fromJSON(x[i])
		}
		return x
	case map[string]any:
		for k := range x {
			x[k] = fromJSON(x[k])
		}
		return x
	}
	return v
}
