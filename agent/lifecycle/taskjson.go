package lifecycle

import (
	"slices"
	"time"
	"unicode/utf8"
)

// appendJSON appends tk as encoding/json would encode it (same members, same
// omissions): a commit persists every task that changed, and the reflective
// encoder cost more than the rest of saving them. TestTaskJSON checks the
// two agree.
func (tk *taskInfo) appendJSON(b []byte) []byte {
	b = append(b, `{"ref":`...)
	b = appendJSONString(b, tk.Ref)
	str := func(name, v string) {
		if v != "" {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, '"', ':')
			b = appendJSONString(b, v)
		}
	}
	tm := func(name string, v time.Time) {
		if !v.IsZero() {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, `":"`...)
			b = v.AppendFormat(b, time.RFC3339Nano)
			b = append(b, '"')
		}
	}
	list := func(name string, v []string) {
		if len(v) > 0 {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, `":[`...)
			for i, s := range v {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, s)
			}
			b = append(b, ']')
		}
	}
	dict := func(name string, m map[string]string) {
		if len(m) > 0 {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, `":{`...)
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for i, k := range keys {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, k)
				b = append(b, ':')
				b = appendJSONString(b, m[k])
			}
			b = append(b, '}')
		}
	}
	flag := func(name string, v bool) {
		if v {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, `":true`...)
		}
	}
	str("uuid", tk.UUID)
	str("name", tk.Name)
	str("status", tk.Status)
	tm("created", tk.Created)
	tm("finished", tk.Finished)
	tm("first_seen", tk.FirstSeen)
	tm("gone_at", tk.GoneAt)
	str("result", tk.Result)
	list("error_info", tk.ErrorInfo)
	str("subtask_of", tk.SubtaskOf)
	str("in_revert", tk.InRevert)
	str("resident", tk.Resident)
	dict("vms", tk.VMs)
	dict("vm_uuids", tk.VMUUIDs)
	list("new_vms", tk.NewVMs)
	str("src_host", tk.SrcHost)
	flag("seen", tk.Seen)
	flag("done", tk.Done)
	flag("gone", tk.Gone)
	flag("recorded", tk.Recorded)
	return append(b, '}')
}

// appendJSONString quotes s as encoding/json does, HTML-safe escapes and
// U+FFFD for invalid UTF-8 included.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
