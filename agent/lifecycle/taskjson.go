package lifecycle

import (
	"slices"
	"time"

	"github.com/vmlineage/vmlineage/internal/jsonw"
)

// appendJSON appends tk as encoding/json would encode it (same members, same
// omissions): a commit persists every task that changed, and the reflective
// encoder cost more than the rest of saving them. TestTaskJSON checks the
// two agree.
func (tk *taskInfo) appendJSON(b []byte) []byte {
	b = append(b, `{"ref":`...)
	b = jsonw.AppendString(b, tk.Ref)
	str := func(name, v string) {
		if v != "" {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, '"', ':')
			b = jsonw.AppendString(b, v)
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
				b = jsonw.AppendString(b, s)
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
				b = jsonw.AppendString(b, k)
				b = append(b, ':')
				b = jsonw.AppendString(b, m[k])
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
