package cef

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats"
	"github.com/vmlineage/vmlineage/formats/internal/checkers"
	"github.com/vmlineage/vmlineage/formats/internal/fixtures"
)

// refClean is a plain, slow statement of the cleaning rules, written apart
// from the encoder's fast path: what a CEF consumer must read back.
func refClean(s string, limit int, header bool) string {
	var rs []rune
	for _, r := range s { // ranging a string turns each bad byte into U+FFFD
		switch {
		case r == '\t', header && (r == '\n' || r == '\r'):
			r = ' '
		case r == '\n' || r == '\r':
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f):
			r = utf8.RuneError
		}
		rs = append(rs, r)
	}
	for len(rs) > 0 && rs[0] == ' ' {
		rs = rs[1:]
	}
	if len(rs) > limit {
		rs = rs[:limit]
	}
	for len(rs) > 0 && rs[len(rs)-1] == ' ' {
		rs = rs[:len(rs)-1]
	}
	return string(rs)
}

type want struct {
	header [6]string
	ext    map[string]string
	order  []string
}

func (w *want) set(k, v string) {
	if v == "" {
		return
	}
	w.ext[k] = v
	w.order = append(w.order, k)
}

func firstIPv4(xs ...string) string {
	for _, x := range xs {
		if a, err := netip.ParseAddr(x); err == nil && a.Unmap().Is4() {
			return a.Unmap().String()
		}
	}
	return ""
}

// expected states, field by field, what the line of a record must carry.
func expected(r *record.Record, c *formats.Context) want {
	sp := formats.SpecOf(r.Activity)
	ver := c.AgentVersion
	if ver == "" {
		ver = "unknown"
	}
	w := want{ext: map[string]string{}}
	w.header = [6]string{"vmlineage", "vmlineage", refClean(ver, 31, true), sp.SignatureID,
		"VM " + sp.Noun + " " + formats.ResultWord(r.Result), strconv.Itoa(formats.Severity(r.Activity, r.Result))}
	ms := func(t interface{ UnixMilli() int64 }) string { return strconv.FormatInt(t.UnixMilli(), 10) }
	ts := r.End
	if ts.IsZero() {
		ts = r.Start
	}
	w.set("rt", ms(ts))
	w.set("start", ms(r.Start))
	if !r.End.IsZero() {
		w.set("end", ms(r.End))
	}
	w.set("act", string(r.Activity))
	w.set("outcome", formats.Outcome(r.Result))
	if r.Error != "" {
		w.set("reason", refClean(r.Error, 1023, false))
	} else if r.Result == record.Denied || r.Result == record.Cancelled {
		w.set("reason", string(r.Result))
	}
	w.set("cat", "/vmlineage/lifecycle/"+strings.TrimPrefix(sp.Action, "vm-"))
	host := r.HostName
	if host == "" {
		host = c.HostName
	}
	w.set("dvchost", refClean(host, 100, false))
	w.set("dvc", firstIPv4(c.HostIP))
	dev := r.HostUUID
	if dev == "" {
		dev = r.PoolUUID
	}
	w.set("deviceExternalId", refClean(dev, 255, false))
	w.set("externalId", refClean(r.ID, 40, false))
	w.set("deviceProcessName", "xapi")
	w.set("deviceFacility", string(r.Source))
	vm := r.VMName
	if vm == "" {
		vm = r.VMUUID
	}
	w.set("dhost", refClean(vm, 1023, false))
	w.set("dst", firstIPv4(c.VMIPs...))
	for _, m := range c.VMMACs {
		if hw, err := parseMAC(m); err == nil {
			w.set("dmac", hw)
			break
		}
	}
	name, id, addr, orig := c.ActorName, c.ActorID, c.ActorAddress, c.ActorOriginator
	if a := r.Actor; a != nil {
		pick := func(x *string, y string) {
			if *x == "" {
				*x = y
			}
		}
		pick(&name, a.Name)
		pick(&id, a.SubjectID)
		pick(&addr, a.ClientIP)
		pick(&orig, a.Originator)
	}
	w.set("suser", refClean(name, 1023, false))
	w.set("suid", refClean(id, 1023, false))
	w.set("src", firstIPv4(addr))
	w.set("requestClientApplication", refClean(orig, 1023, false))
	var p [formats.MaxMessageParts]string
	n := formats.MessageParts(r, c, &p)
	w.set("msg", refClean(strings.Join(p[:n], ""), 1023, false))
	cs := func(i int, label, v string) {
		if v = refClean(v, 4000, false); v != "" {
			w.set(fmt.Sprintf("cs%dLabel", i), label)
			w.set(fmt.Sprintf("cs%d", i), v)
		}
	}
	cs(1, "vmUuid", r.VMUUID)
	cs(2, "parentVmUuid", r.ParentVMUUID)
	cs(3, "poolUuid", r.PoolUUID)
	cs(4, "taskUuid", r.TaskUUID)
	cs(5, "familyRoot", c.FamilyRoot)
	if r.DestinationHostUUID != "" {
		cs(6, "destinationHostUuid", r.DestinationHostUUID)
	} else {
		cs(6, "snapshotUuid", r.SnapshotUUID)
	}
	if !r.End.IsZero() {
		w.set("cn1Label", "durationMs")
		w.set("cn1", strconv.FormatInt(r.End.Sub(r.Start).Milliseconds(), 10))
	}
	if len(c.AncestorPath) > 0 {
		w.set("cn2Label", "lineageDepth")
		w.set("cn2", strconv.Itoa(len(c.AncestorPath)))
	}
	if ch := r.Chain; ch != nil {
		w.set("cn3Label", "chainSeq")
		w.set("cn3", strconv.FormatInt(ch.Seq, 10))
		w.set("flexString1Label", "chainHash")
		w.set("flexString1", ch.Hash)
		w.set("flexString2Label", "chainPrev")
		w.set("flexString2", ch.Prev)
	}
	return w
}

// parseMAC is an independent MAC check: six hex pairs with ':' or '-'.
func parseMAC(s string) (string, error) {
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == '-' })
	if len(parts) != 6 || len(s) != 17 {
		return "", fmt.Errorf("not a MAC")
	}
	for _, p := range parts {
		if len(p) != 2 {
			return "", fmt.Errorf("not a MAC")
		}
		if _, err := strconv.ParseUint(p, 16, 8); err != nil {
			return "", err
		}
	}
	return strings.ToUpper(strings.Join(parts, ":")), nil
}

func checkLine(t *testing.T, line []byte) {
	t.Helper()
	if !bytes.HasPrefix(line, []byte("CEF:0|vmlineage|vmlineage|")) {
		t.Fatalf("line does not start with the CEF header: %q", line)
	}
	if !utf8.Valid(line) {
		t.Fatalf("line is not valid UTF-8: %q", line)
	}
	for _, c := range line {
		if c < 0x20 || c == 0x7f {
			t.Fatalf("line holds raw control byte %#x: %q", c, line)
		}
	}
	if strings.Contains(string(line), "\u0085") {
		t.Fatalf("line holds a raw C1 control: %q", line)
	}
}

func compare(t *testing.T, who string, w want, header [6]string, ext map[string]string) {
	t.Helper()
	if header != w.header {
		t.Errorf("%s: header = %q, want %q", who, header, w.header)
	}
	for k, v := range w.ext {
		if ext[k] != v {
			t.Errorf("%s: %s = %q, want %q", who, k, ext[k], v)
		}
	}
	for k := range ext {
		if _, ok := w.ext[k]; !ok {
			t.Errorf("%s: unexpected key %s=%q", who, k, ext[k])
		}
	}
}

func TestRecordsParseBack(t *testing.T) {
	for _, tc := range fixtures.Cases() {
		t.Run(tc.Name, func(t *testing.T) {
			line := AppendRecord(nil, &tc.R, &tc.C)
			checkLine(t, line)
			e, err := Parse(string(line))
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, line)
			}
			ext := map[string]string{}
			var order []string
			for _, f := range e.Extensions {
				if _, dup := ext[f.Key]; dup {
					t.Errorf("key %s repeated", f.Key)
				}
				ext[f.Key] = f.Value
				order = append(order, f.Key)
			}
			w := expected(&tc.R, &tc.C)
			compare(t, "Parse", w, [6]string{e.DeviceVendor, e.DeviceProduct, e.DeviceVersion, e.SignatureID, e.Name, e.Severity}, ext)
			if strings.Join(order, " ") != strings.Join(w.order, " ") {
				t.Errorf("key order = %v, want %v", order, w.order)
			}
			if e.Version != 0 {
				t.Errorf("version = %d", e.Version)
			}
		})
	}
}

func TestLengthLimitsInCharacters(t *testing.T) {
	tc := fixtures.Base()
	long := strings.Repeat("é", 2000) // two bytes each
	tc.R.HostName, tc.R.ID, tc.C.AgentVersion = long, long, long
	e, err := Parse(string(AppendRecord(nil, &tc.R, &tc.C)))
	if err != nil {
		t.Fatal(err)
	}
	for k, n := range map[string]int{"dvchost": 100, "externalId": 40, "msg": 1023} {
		v, _ := e.Get(k)
		if got := utf8.RuneCountInString(v); got != n {
			t.Errorf("%s has %d characters, want %d", k, got, n)
		}
		if !utf8.ValidString(v) {
			t.Errorf("%s cut inside a UTF-8 sequence", k)
		}
	}
	if got := utf8.RuneCountInString(e.DeviceVersion); got != 31 {
		t.Errorf("device version has %d characters, want 31", got)
	}
}

func TestParse(t *testing.T) {
	line := `CEF:0|Acme\|Corp|Xen\\Agent|1.0|vm.start|VM started|3|rt=1764064800123 dvchost=xen1 cs1Label=pool name cs1=pool\=a msg=line1\nline2 with \\ backslash and | pipe suser=root act=start outcome=success`
	e, err := Parse(line + "\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if e.DeviceVendor != "Acme|Corp" || e.DeviceProduct != `Xen\Agent` || e.Severity != "3" || e.Name != "VM started" {
		t.Errorf("header = %+v", e)
	}
	wantExt := []Field{{"rt", "1764064800123"}, {"dvchost", "xen1"}, {"cs1Label", "pool name"}, {"cs1", "pool=a"},
		{"msg", "line1\nline2 with \\ backslash and | pipe"}, {"suser", "root"}, {"act", "start"}, {"outcome", "success"}}
	if fmt.Sprint(e.Extensions) != fmt.Sprint(wantExt) {
		t.Errorf("extensions = %q\nwant %q", e.Extensions, wantExt)
	}
	if v, ok := e.Custom("pool name"); !ok || v != "pool=a" {
		t.Errorf("Custom(pool name) = %q, %v", v, ok)
	}
	// Two spaces before the next key leave one in the label's value; the
	// label still names its field.
	if e, err := Parse("CEF:0|V|P|1|s|n|3|cs1Label=vm_uuid  cs1=u1"); err != nil {
		t.Fatal(err)
	} else if v, ok := e.Custom("vm_uuid"); !ok || v != "u1" {
		t.Errorf("Custom(vm_uuid) with a spaced label = %q, %v", v, ok)
	}

	// leniency and the standard's space rule
	for in, want := range map[string][]Field{
		"CEF:0|a|b|c|d|e|1|msg=a=b x=1":          {{"msg", "a=b"}, {"x", "1"}},
		"CEF:0|a|b|c|d|e|1| k=v  w=2":            {{"k", "v "}, {"w", "2"}},
		"CEF:0|a|b|c|d|e|1|k= w=":                {{"k", ""}, {"w", ""}},
		"CEF:0|a|b|c|d|e|1|":                     nil,
		"\uFEFFCEF:1|a|b|c|d|e|Low|k=\\x\\":      {{"k", `\x\`}},
		"CEF:0|a|b|c|d|e|1|ad.name=x k_1=y z[]=": {{"ad.name", "x"}, {"k_1", "y"}, {"z[]", ""}},
		// the standard's own example
		"CEF:0|Security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232": {
			{"src", "10.0.0.1"}, {"dst", "2.1.2.2"}, {"spt", "1232"}},
		"CEF:0|Security|threatmanager|1.0|100|detected a \\| in message|10|act=blocked a | dst=1.1.1.1": {
			{"act", "blocked a |"}, {"dst", "1.1.1.1"}},
		"CEF:0|Security|threatmanager|1.0|100|detected a = in message|10|act=blocked a \\= dst=1.1.1.1": {
			{"act", "blocked a ="}, {"dst", "1.1.1.1"}},
	} {
		e, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if fmt.Sprint(e.Extensions) != fmt.Sprint(want) {
			t.Errorf("Parse(%q) = %q, want %q", in, e.Extensions, want)
		}
	}

	// A line without extension may end at the severity, without the '|'.
	if e, err := Parse("CEF:0|Vendor|Product|1.0|100|Port scan|5"); err != nil || e.Severity != "5" || e.Name != "Port scan" || e.Extensions != nil {
		t.Errorf("header-only line without the last '|': %+v, %v", e, err)
	}
	// What is missing is named.
	for in, want := range map[string]string{
		"CEF:0|a|b|c|d|e":               "header has 6 of 7 fields (missing severity)",
		"CEF:0|a|b|c|d|e|":              "header has 6 of 7 fields (missing severity)",
		"CEF:0|a|b|c|d":                 "header has 5 of 7 fields (missing name)",
		"CEF:0|a|b|c|d|e|5 src=1.2.3.4": "no '|' between the severity and the extension",
	} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v, want %q", in, err, want)
		}
	}

	for _, bad := range []string{
		"", "LEEF:1.0|a|b|c|d|", "CEF:x|a|b|c|d|e|1|k=v", "CEF:0|a|b|c|d|e", "CEF:0|a|b|c|d|e|1|=v", "CEF:0|a|b|c|d|e|1|novalue",
		"CEF:0" + strings.Repeat("|", 3) + strings.Repeat("x", MaxLineBytes),
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%.40q) accepted a bad line", bad)
		}
	}
}

func TestAppendEvent(t *testing.T) {
	e := &Event{Version: 0, DeviceVendor: "A|B", DeviceProduct: `C\D`, DeviceVersion: "1\n2", SignatureID: "s", Name: "n", Severity: "5",
		Extensions: []Field{{"msg", "a=b\\c\nd|e"}, {"empty", ""}, {"cs1", " padded "}}}
	b, err := AppendEvent(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	if want := `CEF:0|A\|B|C\\D|1 2|s|n|5|msg=a\=b\\c\nd|e empty= cs1=padded`; string(b) != want {
		t.Errorf("AppendEvent = %s\nwant      %s", b, want)
	}
	if _, err := AppendEvent(nil, &Event{Extensions: []Field{{"bad key", "x"}}}); err == nil {
		t.Error("AppendEvent accepted a key with a space")
	}
}

// TestLognormalizer feeds every line, hostile ones included, to liblognorm's
// CEF parser (rsyslog mmnormalize's engine) and compares each field.
func TestLognormalizer(t *testing.T) {
	ln := checkers.Lognormalizer(t)
	dir := t.TempDir()
	rb := filepath.Join(dir, "cef.rb")
	if err := os.WriteFile(rb, []byte("version=2\nrule=:%cef:cef%\nrule=: %cef:cef%\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := fixtures.Cases()
	var in bytes.Buffer
	for _, tc := range cases {
		in.Write(spaceAfterHeader(AppendRecord(nil, &tc.R, &tc.C)))
		in.WriteByte('\n')
	}
	cmd := exec.Command(ln, "-r", rb, "-e", "json")
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lognormalizer: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("lognormalizer gave %d lines for %d records:\n%s", len(lines), len(cases), out)
	}
	for i, tc := range cases {
		var doc struct {
			CEF *struct {
				DeviceVendor, DeviceProduct, DeviceVersion, SignatureID, Name, Severity string
				Extensions                                                              map[string]string
			} `json:"cef"`
			Unparsed string `json:"unparsed-data"`
		}
		if err := json.Unmarshal([]byte(lines[i]), &doc); err != nil {
			t.Fatalf("%s: lognormalizer output: %v\n%s", tc.Name, err, lines[i])
		}
		if doc.CEF == nil {
			t.Errorf("%s: lognormalizer did not parse the line (unparsed %q)", tc.Name, doc.Unparsed)
			continue
		}
		c := doc.CEF
		compare(t, "lognormalizer "+tc.Name, expected(&tc.R, &tc.C),
			[6]string{c.DeviceVendor, c.DeviceProduct, c.DeviceVersion, c.SignatureID, c.Name, c.Severity}, c.Extensions)
	}
}

// spaceAfterHeader inserts a space after the 7th unescaped '|': Debian's
// liblognorm 2.0.6 drops the first character of the first key otherwise
// (liblognorm issue #363, fixed upstream).
func spaceAfterHeader(line []byte) []byte {
	n := 0
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case '|':
			n++
			if n == 7 {
				out := append([]byte(nil), line[:i+1]...)
				out = append(out, ' ')
				return append(out, line[i+1:]...)
			}
		}
	}
	return line
}
