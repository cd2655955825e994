package record

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Chain is a stored record's place in the store's hash chain (issue 6):
// every record the store seals gets the next sequence number, the hash of
// the record sealed before it, and its own hash. A record that is altered,
// removed or inserted afterwards breaks the chain at that point, and the
// checkpoints shipped to every output let a copy kept elsewhere vouch for
// the local store.
type Chain struct {
	Seq  int64  `json:"seq"`
	Prev string `json:"prev"`
	Hash string `json:"hash"`
}

// GenesisHash is the "previous hash" of the first record of a chain.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// ChainHash is the hash of r when sealed after a record whose hash is prev:
//
//	hex(SHA-256(prev + "\n" + JCS(r without "chain")))
//
// where prev is 64 lowercase hex digits (GenesisHash for the first record)
// and JCS is the RFC 8785 canonical JSON of the record as MarshalJSON writes
// it (members sorted by name, no white space, times in TimeLayout). Anyone
// can recompute it from a JSON-lines copy with any RFC 8785 library.
func ChainHash(prev string, r *Record) string {
	h := sha256.New()
	buf := make([]byte, 0, 1024)
	buf = append(buf, prev...)
	buf = append(buf, '\n')
	buf = AppendCanonical(buf, r)
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil))
}

// AppendCanonical appends the RFC 8785 (JCS) form of r's JSON without its
// chain member. It writes exactly the members MarshalJSON writes (the same
// omitempty rules), in sorted order; a property test checks it against the
// generic path (MarshalJSON, decode, canonicalise) for every field, so a
// field added to Record and forgotten here fails the tests.
func AppendCanonical(b []byte, r *Record) []byte {
	// Member names in code-point order (all ASCII).
	b = append(b, '{')
	b = canonStr(b, "activity", string(r.Activity), true)
	if r.Actor != nil {
		b = append(b, `,"actor":{`...)
		first := true
		for _, m := range [...]struct{ k, v string }{
			{"client_ip", r.Actor.ClientIP}, {"name", r.Actor.Name}, {"originator", r.Actor.Originator},
			{"subject_id", r.Actor.SubjectID}, {"trackid", r.Actor.TrackID},
		} {
			if m.v == "" {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendJCSString(b, m.k)
			b = append(b, ':')
			b = appendJCSString(b, m.v)
		}
		b = append(b, '}')
	}
	b = canonStr(b, "destination_host_uuid", r.DestinationHostUUID, false)
	b = canonStr(b, "end", FormatTime(r.End), true)
	b = canonStr(b, "error", r.Error, false)
	b = canonStr(b, "host_name", r.HostName, false)
	b = canonStr(b, "host_uuid", r.HostUUID, false)
	b = canonStr(b, "id", r.ID, true)
	b = canonStr(b, "operation", r.Operation, false)
	b = canonStr(b, "parent_vm_uuid", r.ParentVMUUID, false)
	b = canonStr(b, "pool_uuid", r.PoolUUID, true)
	b = canonStr(b, "result", string(r.Result), true)
	b = canonStr(b, "snapshot_uuid", r.SnapshotUUID, false)
	b = canonStr(b, "source", string(r.Source), true)
	b = canonStr(b, "start", FormatTime(r.Start), true)
	b = canonStr(b, "task_id", r.TaskID, false)
	b = canonStr(b, "task_uuid", r.TaskUUID, false)
	if len(r.Unknown) > 0 {
		b = append(b, `,"unknown":[`...)
		for i, u := range r.Unknown {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJCSString(b, u)
		}
		b = append(b, ']')
	}
	b = canonStr(b, "vm_name", r.VMName, false)
	b = canonStr(b, "vm_uuid", r.VMUUID, true)
	return append(b, '}')
}

// canonStr writes ,"k":"v" (no comma for the first member, "activity"),
// leaving out an empty v unless always.
func canonStr(b []byte, k, v string, always bool) []byte {
	if v == "" && !always {
		return b
	}
	if k != "activity" {
		b = append(b, ',')
	}
	b = appendJCSString(b, k)
	b = append(b, ':')
	return appendJCSString(b, v)
}

// appendJCSString writes s as RFC 8785 does (ECMAScript JSON.stringify):
// only '"', '\\' and control characters are escaped, the short forms where
// they exist, lower-case \u00xx otherwise; everything else is literal UTF-8.
// Invalid UTF-8 becomes U+FFFD, as encoding/json writes it.
func appendJCSString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"':
				b = append(b, '\\', '"')
			case c == '\\':
				b = append(b, '\\', '\\')
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\f':
				b = append(b, '\\', 'f')
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&15])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, "\uFFFD"...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

const hexDigit = "0123456789abcdef"

// AppendJCS appends the RFC 8785 form of a value decoded by encoding/json
// into any (objects, arrays, strings, bools, nil; numbers must be
// json.Number or float64 holding integers). Verifiers use it on documents
// that are not Records (checkpoints); tests use it as the reference for
// AppendCanonical.
func AppendJCS(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, x)
	case string:
		return appendJCSString(b, x)
	case float64:
		return strconv.AppendFloat(b, x, 'f', -1, 64)
	case interface{ String() string }: // json.Number
		f, err := strconv.ParseFloat(x.String(), 64)
		if err != nil {
			return append(b, x.String()...)
		}
		return strconv.AppendFloat(b, f, 'f', -1, 64)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendJCS(b, e)
		}
		return append(b, ']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		// RFC 8785 sorts by UTF-16 code units; for the ASCII names used
		// here that is byte order.
		sort.Strings(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJCSString(b, k)
			b = append(b, ':')
			b = AppendJCS(b, x[k])
		}
		return append(b, '}')
	}
	return append(b, "null"...)
}
