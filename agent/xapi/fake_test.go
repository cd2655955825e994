package xapi

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeXAPI is a small XAPI for the tests: it writes the exact bytes xapi
// writes (ocaml-rpc: untyped strings and ints, <i4> only in
// valid_ref_counts, dateTime.iso8601 "20250319T04:16:24Z", no whitespace,
// Status/Value envelopes) and keeps a generation counter so event.from,
// event.inject and get_all_records behave as in reference section 6.1.

// Wire value model.
type (
	xint  int64 // XML: untyped digits; JSON: number
	xi4   int   // XML: <i4>
	xtime time.Time
	kv    struct {
		k string
		v any
	}
	xstruct []kv // ordered struct/map
)

func encXML(b *bytes.Buffer, v any) {
	b.WriteString("<value>")
	switch x := v.(type) {
	case string:
		xml.EscapeText(b, []byte(x))
	case xint:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case xi4:
		fmt.Fprintf(b, "<i4>%d</i4>", x)
	case bool:
		if x {
			b.WriteString("<boolean>1</boolean>")
		} else {
			b.WriteString("<boolean>0</boolean>")
		}
	case float64:
		fmt.Fprintf(b, "<double>%s</double>", strconv.FormatFloat(x, 'g', 16, 64))
	case xtime:
		fmt.Fprintf(b, "<dateTime.iso8601>%s</dateTime.iso8601>", time.Time(x).UTC().Format(DateTimeLayout))
	case []any:
		b.WriteString("<array><data>")
		for _, e := range x {
			encXML(b, e)
		}
		b.WriteString("</data></array>")
	case xstruct:
		b.WriteString("<struct>")
		for _, m := range x {
			b.WriteString("<member><name>")
			xml.EscapeText(b, []byte(m.k))
			b.WriteString("</name>")
			encXML(b, m.v)
			b.WriteString("</member>")
		}
		b.WriteString("</struct>")
	default:
		panic(fmt.Sprintf("encXML %T", v))
	}
	b.WriteString("</value>")
}

func toJSON(v any) any {
	switch x := v.(type) {
	case xint:
		return int64(x)
	case xi4:
		return int(x)
	case xtime:
		return time.Time(x).UTC().Format(DateTimeLayout)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toJSON(e)
		}
		return out
	case xstruct:
		m := make(map[string]any, len(x))
		for _, e := range x {
			m[e.k] = toJSON(e.v)
		}
		return m
	}
	return v
}

func xmlSuccess(v any) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?><methodResponse><params><param>`)
	encXML(&b, xstruct{{"Status", "Success"}, {"Value", v}})
	b.WriteString(`</param></params></methodResponse>`)
	return b.Bytes()
}

func xmlFailure(desc ...string) []byte {
	var b bytes.Buffer
	l := make([]any, len(desc))
	for i, d := range desc {
		l[i] = d
	}
	b.WriteString(`<?xml version="1.0"?><methodResponse><params><param>`)
	encXML(&b, xstruct{{"Status", "Failure"}, {"ErrorDescription", l}})
	b.WriteString(`</param></params></methodResponse>`)
	return b.Bytes()
}

// Request parsing (the client sends typed values through kolo).
type xnode struct {
	XMLName  xml.Name
	Text     string  `xml:",chardata"`
	Children []xnode `xml:",any"`
}

func decodeReqValue(n xnode) any {
	if len(n.Children) == 0 {
		return n.Text
	}
	c := n.Children[0]
	switch c.XMLName.Local {
	case "string":
		return c.Text
	case "double":
		f, _ := strconv.ParseFloat(c.Text, 64)
		return f
	case "int", "i4":
		i, _ := strconv.Atoi(c.Text)
		return float64(i)
	case "boolean":
		return c.Text == "1"
	case "array":
		var out []any
		if len(c.Children) > 0 {
			for _, v := range c.Children[0].Children {
				out = append(out, decodeReqValue(v))
			}
		}
		return out
	}
	return c.Text
}

type obj struct {
	fields            xstruct
	created, modified int64
}

type delRec struct {
	class, ref       string
	created, deleted int64
}

type fakeXAPI struct {
	mu         sync.Mutex
	user, pass string
	slaveOf    string // if set, answer HOST_IS_SLAVE [slaveOf]
	thumbprint string // sent with HOST_IS_SLAVE when asked
	noJSON     bool   // /jsonrpc answers text/xml, as hosts without JSON-RPC
	sessions   map[string]bool
	nsess      int
	gen        int64
	objs       map[string]map[string]*obj // lower-case class
	dels       []delRec
	changed    chan struct{}
	calls      []string
	// hook may take over a call: return true if it wrote the answer.
	hook func(method string, w http.ResponseWriter, r *http.Request, json bool) bool
}

func newFake() *fakeXAPI {
	f := &fakeXAPI{user: "root", pass: "secret", sessions: map[string]bool{},
		objs: map[string]map[string]*obj{}, changed: make(chan struct{})}
	f.put("pool", "OpaqueRef:pool-0", xstruct{{"uuid", "pool-uuid"}, {"name_label", "pool"}, {"master", "OpaqueRef:host-0"}})
	f.put("host", "OpaqueRef:host-0", xstruct{{"uuid", "host-uuid-0"}, {"name_label", "h0"}, {"hostname", "h0"}, {"address", "127.0.0.1"}})
	return f
}

// put adds or modifies an object (one generation per write).
func (f *fakeXAPI) put(class, ref string, fields xstruct) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	m := f.objs[class]
	if m == nil {
		m = map[string]*obj{}
		f.objs[class] = m
	}
	if o := m[ref]; o != nil {
		o.fields, o.modified = fields, f.gen
	} else {
		m[ref] = &obj{fields: fields, created: f.gen, modified: f.gen}
	}
	f.kick()
}

func (f *fakeXAPI) del(class, ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	if o := f.objs[class][ref]; o != nil {
		f.dels = append(f.dels, delRec{class, ref, o.created, f.gen})
		delete(f.objs[class], ref)
	}
	f.kick()
}

func (f *fakeXAPI) kick() { close(f.changed); f.changed = make(chan struct{}) }

func (f *fakeXAPI) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeXAPI) count(method string) int {
	n := 0
	for _, c := range f.callLog() {
		if c == method {
			n++
		}
	}
	return n
}

// killSessions invalidates every session (a toolstack restart).
func (f *fakeXAPI) killSessions() {
	f.mu.Lock()
	f.sessions = map[string]bool{}
	f.kick()
	f.mu.Unlock()
}

func (f *fakeXAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	isJSON := r.URL.Path == "/jsonrpc"
	body, _ := io.ReadAll(r.Body)
	var method string
	var params []any
	var id any
	if isJSON && !f.noJSON {
		var req struct {
			Method string `json:"method"`
			Params []any  `json:"params"`
			ID     any    `json:"id"`
		}
		if err := json.Unmarshal(body, &req); err != nil || req.ID == nil {
			http.Error(w, "<html>Jsonrpc.Malformed_method_request</html>", 500)
			return
		}
		method, params, id = req.Method, req.Params, req.ID
	} else {
		var call struct {
			Method string `xml:"methodName"`
			Params []struct {
				Value xnode `xml:"value"`
			} `xml:"params>param"`
		}
		if err := xml.Unmarshal(body, &call); err != nil {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(500)
			fmt.Fprintf(w, "<html><body>Xmlrpc.Parse_error(%q)</body></html>", err.Error())
			return
		}
		method = call.Method
		for _, p := range call.Params {
			params = append(params, decodeReqValue(p.Value))
		}
		isJSON = false
	}
	f.mu.Lock()
	f.calls = append(f.calls, method)
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(method, w, r, isJSON) {
		return
	}
	val, fail := f.dispatch(r, method, params)
	f.mu.Lock()
	thumb := f.thumbprint
	f.mu.Unlock()
	if fail != nil && fail[0] == ErrHostIsSlave && thumb != "" && r.Header.Get(thumbprintRequestHeader) == thumbprintRequestValue {
		w.Header().Set(thumbprintResponseHeader, thumb)
	}
	if isJSON {
		w.Header().Set("Content-Type", "application/json")
		out := map[string]any{"jsonrpc": "2.0", "id": id}
		if fail != nil {
			data := make([]any, 0, len(fail)-1)
			for _, p := range fail[1:] {
				data = append(data, p)
			}
			out["error"] = map[string]any{"code": 1, "message": fail[0], "data": data}
		} else {
			out["result"] = toJSON(val)
		}
		json.NewEncoder(w).Encode(out)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	if fail != nil {
		w.Write(xmlFailure(fail...))
		return
	}
	w.Write(xmlSuccess(val))
}

func str(p []any, i int) string {
	if i < len(p) {
		s, _ := p[i].(string)
		return s
	}
	return ""
}

// demote makes this host a member of the pool mastered by addr.
func (f *fakeXAPI) demote(addr string) {
	f.mu.Lock()
	f.slaveOf = addr
	f.kick()
	f.mu.Unlock()
}

func (f *fakeXAPI) dispatch(r *http.Request, method string, p []any) (any, []string) {
	f.mu.Lock()
	slaveOf := f.slaveOf
	f.mu.Unlock()
	if slaveOf != "" {
		return nil, []string{ErrHostIsSlave, slaveOf}
	}
	if method == "session.login_with_password" {
		if str(p, 0) != f.user || str(p, 1) != f.pass {
			return nil, []string{ErrAuthFailed, str(p, 0), "Authentication failure"}
		}
		f.mu.Lock()
		f.nsess++
		ref := fmt.Sprintf("OpaqueRef:session-%d", f.nsess)
		f.sessions[ref] = true
		f.mu.Unlock()
		return ref, nil
	}
	f.mu.Lock()
	ok := f.sessions[str(p, 0)]
	f.mu.Unlock()
	if !ok {
		return nil, []string{ErrSessionInvalid, str(p, 0)}
	}
	switch {
	case method == "session.logout":
		f.mu.Lock()
		delete(f.sessions, str(p, 0))
		f.kick()
		f.mu.Unlock()
		return "", nil
	case method == "session.get_uuid":
		return "session-uuid", nil
	case method == "pool.get_all":
		return []any{"OpaqueRef:pool-0"}, nil
	case method == "event.inject":
		f.mu.Lock()
		defer f.mu.Unlock()
		o := f.objs[strings.ToLower(str(p, 1))][str(p, 2)]
		if o == nil {
			return nil, []string{ErrHandleInvalid, str(p, 1), str(p, 2)}
		}
		f.gen++
		o.modified = f.gen
		f.kick()
		return tokenOf(f.gen - 1), nil
	case method == "event.from":
		return f.eventFrom(r, str(p, 0), p)
	case strings.HasSuffix(method, ".get_all_records"):
		class := strings.ToLower(strings.TrimSuffix(method, ".get_all_records"))
		f.mu.Lock()
		defer f.mu.Unlock()
		var out xstruct
		for _, ref := range sortedRefs(f.objs[class]) {
			out = append(out, kv{ref, f.objs[class][ref].fields})
		}
		return out, nil
	case strings.HasSuffix(method, ".get_all"):
		class := strings.ToLower(strings.TrimSuffix(method, ".get_all"))
		f.mu.Lock()
		defer f.mu.Unlock()
		out := []any{}
		for _, ref := range sortedRefs(f.objs[class]) {
			out = append(out, ref)
		}
		return out, nil
	}
	return nil, []string{ErrMethodUnknown, method}
}

func sortedRefs(m map[string]*obj) []string {
	refs := make([]string, 0, len(m))
	for r := range m {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	return refs
}

func tokenOf(gen int64) string { return fmt.Sprintf("%020d,%020d", gen, 0) }

func (f *fakeXAPI) eventFrom(r *http.Request, sess string, p []any) (any, []string) {
	var classes []string
	if l, ok := p[1].([]any); ok {
		for _, c := range l {
			s, _ := c.(string)
			classes = append(classes, strings.ToLower(s))
		}
	}
	tok := str(p, 2)
	var from int64
	if tok != "" {
		a, _, ok := strings.Cut(tok, ",")
		n, err := strconv.ParseInt(a, 10, 64)
		if !ok || err != nil {
			return nil, []string{ErrTokenParse, tok}
		}
		from = n
	}
	timeout, _ := p[3].(float64)
	deadline := time.After(time.Duration(timeout * float64(time.Second)))
	for {
		f.mu.Lock()
		if !f.sessions[sess] {
			f.mu.Unlock()
			return nil, []string{ErrSessionInvalid, sess}
		}
		if f.slaveOf != "" { // demoted while the call waited
			m := f.slaveOf
			f.mu.Unlock()
			return nil, []string{ErrHostIsSlave, m}
		}
		var evs []any
		max := from
		for _, class := range classes {
			for _, ref := range sortedRefs(f.objs[class]) {
				o := f.objs[class][ref]
				if o.modified <= from {
					continue
				}
				op := "mod"
				if o.created > from {
					op = "add"
				}
				evs = append(evs, xstruct{{"id", strconv.FormatInt(o.modified, 10)}, {"timestamp", "0.0"},
					{"class", class}, {"operation", op}, {"ref", ref}, {"snapshot", o.fields}})
				max = maxI(max, o.modified)
			}
			for _, d := range f.dels {
				if d.class == class && d.created <= from && d.deleted > from {
					evs = append(evs, xstruct{{"id", strconv.FormatInt(d.deleted, 10)}, {"timestamp", "0.0"},
						{"class", class}, {"operation", "del"}, {"ref", d.ref}})
					max = maxI(max, d.deleted)
				}
			}
		}
		counts := xstruct{{"session", xi4(len(f.sessions))}}
		for _, c := range []string{"host", "pool", "task", "vm"} {
			counts = append(counts, kv{c, xi4(len(f.objs[c]))})
		}
		ch := f.changed
		f.mu.Unlock()
		if len(evs) > 0 {
			return xstruct{{"events", evs}, {"valid_ref_counts", counts}, {"token", tokenOf(max)}}, nil
		}
		select {
		case <-ch:
		case <-deadline:
			return xstruct{{"events", []any{}}, {"valid_ref_counts", counts}, {"token", tokenOf(from)}}, nil
		case <-r.Context().Done():
			return nil, []string{"CLIENT_GONE"}
		}
	}
}

func maxI(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// vmRecord is a realistic VM record: the ~85 members xapi sends for a
// running HVM guest, values as on the wire.
func vmRecord(i int) xstruct {
	uuid := fmt.Sprintf("%08x-1f2e-4d3c-8b7a-%012x", i, i)
	t := xtime(time.Date(2025, 3, 19, 4, 16, 24, 0, time.UTC))
	epoch := xtime(time.Unix(0, 0))
	return xstruct{
		{"uuid", uuid}, {"allowed_operations", []any{"changing_dynamic_range", "migrate_send", "pool_migrate", "changing_VCPUs_live", "suspend", "hard_reboot", "hard_shutdown", "clean_reboot", "clean_shutdown", "pause", "checkpoint", "snapshot", "export", "destroy"}},
		{"current_operations", xstruct{}}, {"name_label", fmt.Sprintf("web-%d <prod> & co", i)}, {"name_description", "Ubuntu 22.04 web frontend"},
		{"power_state", "Running"}, {"user_version", xint(1)}, {"is_a_template", false}, {"is_default_template", false},
		{"suspend_VDI", NullRef}, {"resident_on", "OpaqueRef:host-0"}, {"scheduled_to_be_resident_on", NullRef}, {"affinity", "OpaqueRef:host-0"},
		{"memory_overhead", xint(11534336)}, {"memory_target", xint(4294967296)}, {"memory_static_max", xint(4294967296)},
		{"memory_dynamic_max", xint(4294967296)}, {"memory_dynamic_min", xint(4294967296)}, {"memory_static_min", xint(1073741824)},
		{"VCPUs_params", xstruct{}}, {"VCPUs_max", xint(2)}, {"VCPUs_at_startup", xint(2)},
		{"actions_after_softreboot", "soft_reboot"}, {"actions_after_shutdown", "destroy"}, {"actions_after_reboot", "restart"}, {"actions_after_crash", "restart"},
		{"consoles", []any{fmt.Sprintf("OpaqueRef:console-%d", i)}},
		{"VIFs", []any{fmt.Sprintf("OpaqueRef:vif-%d-0", i), fmt.Sprintf("OpaqueRef:vif-%d-1", i)}},
		{"VBDs", []any{fmt.Sprintf("OpaqueRef:vbd-%d-0", i), fmt.Sprintf("OpaqueRef:vbd-%d-1", i), fmt.Sprintf("OpaqueRef:vbd-%d-2", i)}},
		{"VUSBs", []any{}}, {"crash_dumps", []any{}}, {"VTPMs", []any{}},
		{"PV_bootloader", ""}, {"PV_kernel", ""}, {"PV_ramdisk", ""}, {"PV_args", ""}, {"PV_bootloader_args", ""}, {"PV_legacy_args", ""},
		{"HVM_boot_policy", "BIOS order"}, {"HVM_boot_params", xstruct{{"order", "cdn"}, {"firmware", "bios"}}}, {"HVM_shadow_multiplier", 1.0},
		{"platform", xstruct{{"timeoffset", "0"}, {"device-model", "qemu-upstream-compat"}, {"videoram", "8"}, {"hpet", "true"}, {"secureboot", "false"}, {"vga", "std"}, {"apic", "true"}, {"viridian", "false"}, {"nx", "true"}, {"acpi", "1"}, {"cores-per-socket", "2"}, {"pae", "true"}}},
		{"PCI_bus", ""},
		{"other_config", xstruct{{"base_template_name", "Ubuntu Jammy Jellyfish 22.04"}, {"import_task", "OpaqueRef:NULL"}, {"mac_seed", uuid}, {"install-methods", "cdrom,nfs,http,ftp"}, {"linux_template", "true"}}},
		{"domid", xint(i%4000 + 1)}, {"domarch", "x64"},
		{"last_boot_CPU_flags", xstruct{{"vendor", "GenuineIntel"}, {"features", "1fcbfbff-f7fa3223-2d93fbff-00000423-00000001-000007ab-00000000-00000000-00001000-8c000400-00000000-00000000-00000000-00000000-00000000-00000000-00000000-00000000"}}},
		{"is_control_domain", false}, {"metrics", fmt.Sprintf("OpaqueRef:vm-metrics-%d", i)}, {"guest_metrics", fmt.Sprintf("OpaqueRef:gm-%d", i)},
		{"last_booted_record", ""}, {"recommendations", `<restrictions><restriction field="memory-static-max" max="1649267441664"/><restriction field="vcpus-max" max="32"/><restriction property="number-of-vbds" max="255"/><restriction property="number-of-vifs" max="7"/></restrictions>`},
		{"xenstore_data", xstruct{{"vm-data", ""}, {"vm-data/mmio-hole-size", "268435456"}}},
		{"ha_always_run", false}, {"ha_restart_priority", ""}, {"is_a_snapshot", false}, {"snapshot_of", NullRef},
		{"snapshots", []any{fmt.Sprintf("OpaqueRef:snap-%d", i)}}, {"snapshot_time", epoch}, {"transportable_snapshot_id", ""},
		{"blobs", xstruct{}}, {"tags", []any{"web", "prod"}}, {"blocked_operations", xstruct{}}, {"snapshot_info", xstruct{}}, {"snapshot_metadata", ""},
		{"parent", fmt.Sprintf("OpaqueRef:snap-%d", i)}, {"children", []any{}},
		{"bios_strings", xstruct{{"bios-vendor", "Xen"}, {"bios-version", ""}, {"system-manufacturer", "Xen"}, {"system-product-name", "HVM domU"}, {"system-version", ""}, {"system-serial-number", ""}, {"baseboard-manufacturer", ""}, {"hp-rombios", ""}, {"oem-1", "Xen"}, {"oem-2", "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d"}}},
		{"protection_policy", NullRef}, {"is_snapshot_from_vmpp", false}, {"snapshot_schedule", NullRef}, {"is_vmss_snapshot", false},
		{"appliance", NullRef}, {"start_delay", xint(0)}, {"shutdown_delay", xint(0)}, {"order", xint(0)}, {"VGPUs", []any{}}, {"attached_PCIs", []any{}},
		{"suspend_SR", NullRef}, {"version", xint(0)}, {"generation_id", "0:0"}, {"hardware_platform_version", xint(0)}, {"has_vendor_device", false},
		{"requires_reboot", false}, {"reference_label", "ubuntu-22.04"}, {"domain_type", "hvm"}, {"NVRAM", xstruct{}},
		{"pending_guidances", []any{}}, {"pending_guidances_recommended", []any{}}, {"pending_guidances_full", []any{}},
		{"start_time", t},
	}
}

func taskRecord(i int, status string) xstruct {
	t := xtime(time.Date(2025, 3, 19, 4, 16, 24, 0, time.UTC))
	fin := xtime(time.Unix(0, 0))
	res := ""
	if status == TaskSuccess {
		fin = xtime(time.Date(2025, 3, 19, 4, 16, 30, 0, time.UTC))
		res = fmt.Sprintf("<value>OpaqueRef:vm-%d</value>", i+1)
	}
	return xstruct{{"uuid", fmt.Sprintf("task-%d", i)}, {"name_label", "Async.VM.clone"}, {"name_description", ""},
		{"allowed_operations", []any{}}, {"current_operations", xstruct{}}, {"created", t}, {"finished", fin},
		{"status", status}, {"resident_on", "OpaqueRef:host-0"}, {"progress", 1.0}, {"type", "<none/>"}, {"result", res},
		{"error_info", []any{}}, {"other_config", xstruct{}}, {"subtask_of", NullRef}, {"subtasks", []any{}}, {"backtrace", "()"}}
}

// batchXML builds an event.from answer of n VM mod events.
func batchXML(n int) []byte {
	evs := make([]any, n)
	for i := range evs {
		evs[i] = xstruct{{"id", strconv.Itoa(1000 + i)}, {"timestamp", "0.0"}, {"class", "vm"}, {"operation", "mod"},
			{"ref", fmt.Sprintf("OpaqueRef:vm-%d", i)}, {"snapshot", vmRecord(i)}}
	}
	return xmlSuccess(xstruct{{"events", evs}, {"valid_ref_counts", xstruct{{"vm", xi4(n)}, {"task", xi4(3)}, {"session", xi4(2)}}},
		{"token", tokenOf(int64(1000 + n))}})
}

func batchJSON(n int) []byte {
	evs := make([]any, n)
	for i := range evs {
		evs[i] = xstruct{{"id", strconv.Itoa(1000 + i)}, {"timestamp", "0.0"}, {"class", "vm"}, {"operation", "mod"},
			{"ref", fmt.Sprintf("OpaqueRef:vm-%d", i)}, {"snapshot", vmRecord(i)}}
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "result": toJSON(xstruct{{"events", evs},
		{"valid_ref_counts", xstruct{{"vm", xi4(n)}, {"task", xi4(3)}, {"session", xi4(2)}}}, {"token", tokenOf(int64(1000 + n))}})})
	return b
}

func newPlainB(b *testing.B, h http.Handler) string {
	s := httptest.NewServer(h)
	b.Cleanup(s.Close)
	return s.URL
}
