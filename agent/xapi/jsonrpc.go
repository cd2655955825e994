package xapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// JSON-RPC 2.0 at /jsonrpc (reference xapi.md section 3). Types differ from
// XML-RPC: ints are numbers, datetimes strings; the wire structs below take
// either form so the same Snapshot comes out of both transports.

type jsonRequest struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  []any  `json:"params"`
	ID      uint64 `json:"id"`
}

type jsonResponse struct {
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

func encodeJSONRPC(method string, args []any, id uint64) ([]byte, error) {
	if args == nil {
		args = []any{}
	}
	return json.Marshal(jsonRequest{JSONRPC: "2.0", Method: method, Params: args, ID: id})
}

// jsonError turns a JSON-RPC error (2.0 object or 1.0 list) into *Error.
func jsonError(raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var obj struct {
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	if raw[0] == '{' {
		if err := json.Unmarshal(raw, &obj); err != nil {
			return fmt.Errorf("%w: bad JSON-RPC error object: %v", errSyntax, err)
		}
		e := &Error{Code: obj.Message}
		var params []any
		if len(obj.Data) > 0 && json.Unmarshal(obj.Data, &params) == nil {
			for _, p := range params {
				e.Params = append(e.Params, anyString(p))
			}
		}
		if e.Code == "" {
			e.Code = "UNKNOWN_ERROR"
		}
		return e
	}
	var list []any
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("%w: bad JSON-RPC error: %v", errSyntax, err)
	}
	ss := make([]string, len(list))
	for i, p := range list {
		ss[i] = anyString(p)
	}
	return newError(ss)
}

func anyString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case nil:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// decodeJSONRPC splits a JSON-RPC reply held in memory.
func decodeJSONRPC(b []byte) (json.RawMessage, error) {
	var r jsonResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: JSON-RPC reply: %v", errSyntax, err)
	}
	if err := jsonError(r.Error); err != nil {
		return nil, err
	}
	if r.Result == nil {
		return nil, fmt.Errorf("%w: JSON-RPC reply has neither result nor error", errSyntax)
	}
	return r.Result, nil
}

// flexString takes a JSON string or number (XAPI ints) as a string.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
		return nil
	}
	if string(b) == "null" {
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*f = flexString(n)
	return nil
}

// flexTime takes XAPI's datetime string in JSON.
type flexTime time.Time

func (f *flexTime) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s == "" {
		return nil
	}
	t, err := parseXAPITime(s)
	if err != nil {
		return err
	}
	*f = flexTime(t)
	return nil
}

type snapshotAlias Snapshot

// jsonSnapshot is Snapshot as JSON-RPC carries it.
type jsonSnapshot struct {
	snapshotAlias
	Domid        flexString `json:"domid"`
	SnapshotTime flexTime   `json:"snapshot_time"`
	Created      flexTime   `json:"created"`
	Finished     flexTime   `json:"finished"`
}

func decodeJSONSnapshot(raw []byte, x *Snapshot) error {
	var w jsonSnapshot
	if err := json.Unmarshal(raw, &w); err != nil {
		return err
	}
	w.toSnapshot(x)
	return nil
}

func (w *jsonSnapshot) toSnapshot(x *Snapshot) {
	*x = Snapshot(w.snapshotAlias)
	x.Domid = string(w.Domid)
	x.SnapshotTime = time.Time(w.SnapshotTime)
	x.Created = time.Time(w.Created)
	x.Finished = time.Time(w.Finished)
}

type jsonEvent struct {
	ID        flexString    `json:"id"`
	Class     string        `json:"class"`
	Operation string        `json:"operation"`
	Ref       string        `json:"ref"`
	Snapshot  *jsonSnapshot `json:"snapshot"` // one pass: no RawMessage re-parse
}

type jsonBatch struct {
	Events         []jsonEvent    `json:"events"`
	ValidRefCounts map[string]int `json:"valid_ref_counts"`
	Token          string         `json:"token"`
}

func decodeJSONBatch(raw []byte, b *EventBatch) error {
	var w jsonBatch
	if err := json.Unmarshal(raw, &w); err != nil {
		return fmt.Errorf("%w: event.from result: %v", errSyntax, err)
	}
	b.Token, b.ValidRefCounts = w.Token, w.ValidRefCounts
	if len(w.Events) > 0 {
		b.Events = make([]Event, len(w.Events))
	}
	for i, e := range w.Events {
		ev := &b.Events[i]
		ev.ID, ev.Class, ev.Operation, ev.Ref = string(e.ID), e.Class, e.Operation, e.Ref
		if e.Snapshot != nil {
			ev.Snapshot = new(Snapshot)
			e.Snapshot.toSnapshot(ev.Snapshot)
		}
	}
	return nil
}

// streamJSONRecords walks {"result": {ref: record, …}} with a token
// decoder, so only one record is in memory at a time.
func streamJSONRecords(r io.Reader, fn func(ref string, snap *Snapshot) error) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	sawResult := false
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: JSON-RPC reply: %v", errSyntax, err)
		}
		switch k {
		case "result":
			sawResult = true
			t, err := dec.Token()
			if err != nil {
				return fmt.Errorf("%w: JSON-RPC result: %v", errSyntax, err)
			}
			if t == nil {
				continue
			}
			if d, ok := t.(json.Delim); !ok || d != '{' {
				return fmt.Errorf("%w: get_all_records result is not an object", errSyntax)
			}
			for dec.More() {
				rt, err := dec.Token()
				if err != nil {
					return fmt.Errorf("%w: JSON-RPC result: %v", errSyntax, err)
				}
				ref, _ := rt.(string)
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					return fmt.Errorf("%w: record %s: %v", errSyntax, ref, err)
				}
				snap := new(Snapshot)
				if err := decodeJSONSnapshot(raw, snap); err != nil {
					return fmt.Errorf("%w: record %s: %v", errSyntax, ref, err)
				}
				if err := fn(ref, snap); err != nil {
					return err
				}
			}
			if err := expectDelim(dec, '}'); err != nil {
				return err
			}
		case "error":
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return fmt.Errorf("%w: JSON-RPC error: %v", errSyntax, err)
			}
			if err := jsonError(raw); err != nil {
				return err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return fmt.Errorf("%w: JSON-RPC reply: %v", errSyntax, err)
			}
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	if !sawResult {
		return fmt.Errorf("%w: JSON-RPC reply has neither result nor error", errSyntax)
	}
	return nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: JSON-RPC reply: %v", errSyntax, err)
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return fmt.Errorf("%w: JSON-RPC reply: got %v, want %q", errSyntax, t, want)
	}
	return nil
}
