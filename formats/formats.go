// Package formats holds what the record encoders (formats/ecs, formats/cef)
// share: the lineage Context the pipeline looks up from the store, and the
// per-activity vocabulary (action names, signature ids, ECS category/type,
// CEF severity) so both formats say the same thing about a record.
//
// Formats know nothing of outputs: they turn a record into bytes.
package formats

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// Vendor and Product name vmlineage in every format. They are a contract with
// SIEM parsers (Splunk SC4S keys the sourcetype on them): never change them.
const (
	Vendor  = "vmlineage"
	Product = "vmlineage"
)

// Dataset is the ECS event.dataset and data stream dataset of lifecycle records.
const Dataset = "vmlineage.lifecycle"

// DefaultNamespace is the data stream namespace used when none is configured.
const DefaultNamespace = "default"

// VMKind says what a VM object is in the family tree.
type VMKind string

// Kinds of VM objects.
const (
	KindVM       VMKind = "vm"
	KindSnapshot VMKind = "snapshot"
	KindTemplate VMKind = "template"
)

// Context is what the pipeline knows about a record besides the record itself,
// looked up from the lineage store at encoding time. Every field is optional;
// a nil *Context is the same as a zero one.
type Context struct {
	PoolName string // pool name-label
	// HostName is the XAPI host that ran the task; it is used when the record's
	// own HostName is empty.
	HostName            string
	HostIP              string // management address of that host
	DestinationHostName string // name of Record.DestinationHostUUID (migrate)

	VMKind       VMKind   // kind of the record's VM
	PowerState   string   // XAPI power_state after the operation (Halted, Running, ...)
	ParentName   string   // name-label of Record.ParentVMUUID
	AncestorPath []string // VM uuids from the family root down to the parent
	FamilyRoot   string   // uuid of the oldest known ancestor (the VM itself when it has none)
	VMIPs        []string // the VM's addresses at the record's time
	VMMACs       []string // the VM's MAC addresses at the record's time

	// Actor is who caused the operation (issue 6: RBAC audit log join).
	// Empty fields fall back to Record.Actor (see ActorOf).
	ActorName       string // user name
	ActorID         string // subject id
	ActorAddress    string // client address of the XAPI session
	ActorOriginator string // the session's originator (xe: cli)

	// Tamper-evident chain (issue 6): the record's sequence number in the
	// store's chain, hashes of the previous record and of this one. Empty
	// fields fall back to Record.Chain (see ChainOf).
	ChainSeq  int64
	ChainPrev string
	ChainHash string

	AgentName    string // this agent's name (usually the machine's host name)
	AgentID      string
	AgentVersion string
	Namespace    string // data stream namespace; DefaultNamespace when empty
}

// Checkpoint is a copy of the head of the store's hash chain, shipped to
// every output beside the records: whoever keeps the output's copy can later
// prove the store's records up to Seq are the ones it was sent.
type Checkpoint struct {
	Seq      int64     // chain sequence number of the head
	Hash     string    // its hash
	At       time.Time // when the checkpoint was taken
	Reason   string    // periodic, shutdown, start
	PoolUUID string
}

// CheckpointID is the document id of a checkpoint: the same head gives the
// same id, so a checkpoint sent twice is one document.
func CheckpointID(cp *Checkpoint) string {
	h := cp.Hash
	if len(h) > 16 {
		h = h[:16]
	}
	return fmt.Sprintf("chain-%d-%s", cp.Seq, h)
}

// CheckpointSignatureID is the CEF Device Event Class ID and ECS
// event.action of checkpoints.
const CheckpointSignatureID = "chain.checkpoint"

// CheckNamespace reports whether ns can be a data stream namespace: lower
// case, at most 100 bytes, none of \ / * ? " < > | , # : - or space.
func CheckNamespace(ns string) error {
	if ns == "" {
		return errors.New("namespace is empty")
	}
	if len(ns) > 100 {
		return fmt.Errorf("namespace %q is longer than 100 bytes", ns)
	}
	if strings.ToLower(ns) != ns {
		return fmt.Errorf("namespace %q must be lower case", ns)
	}
	if i := strings.IndexAny(ns, "\\/*?\"<>|,#:- "); i >= 0 {
		return fmt.Errorf("namespace %q holds forbidden character %q", ns, ns[i])
	}
	if ns[0] == '_' || ns[0] == '+' || ns[0] == '.' {
		return fmt.Errorf("namespace %q must not start with %q", ns, ns[0])
	}
	return nil
}

// Spec is the vocabulary of one activity.
type Spec struct {
	Action      string // ECS event.action, e.g. "vm-clone"
	SignatureID string // CEF Device Event Class ID, e.g. "vm.clone"
	Noun        string // what the activity is called in messages and CEF names, e.g. "clone"
	Category    string // ECS event.category
	Type        string // ECS event.type
	Severity    int    // CEF severity of a successful operation (0-10)
	sensitive   bool
}

var specs = map[record.Activity]Spec{
	record.Create:            {"vm-create", "vm.create", "create", "configuration", "creation", 3, false},
	record.Import:            {"vm-import", "vm.import", "import", "configuration", "creation", 4, false},
	record.Clone:             {"vm-clone", "vm.clone", "clone", "configuration", "creation", 4, false},
	record.Copy:              {"vm-copy", "vm.copy", "copy", "configuration", "creation", 4, false},
	record.Snapshot:          {"vm-snapshot", "vm.snapshot", "snapshot", "configuration", "creation", 3, false},
	record.Checkpoint:        {"vm-checkpoint", "vm.checkpoint", "checkpoint", "configuration", "creation", 3, false},
	record.Revert:            {"vm-revert", "vm.revert", "revert", "host", "change", 5, false},
	record.Start:             {"vm-start", "vm.start", "start", "host", "start", 2, false},
	record.Shutdown:          {"vm-shutdown", "vm.shutdown", "shutdown", "host", "end", 2, false},
	record.Reboot:            {"vm-reboot", "vm.reboot", "reboot", "host", "change", 2, false},
	record.Suspend:           {"vm-suspend", "vm.suspend", "suspend", "host", "end", 2, false},
	record.Resume:            {"vm-resume", "vm.resume", "resume", "host", "start", 3, false},
	record.Pause:             {"vm-pause", "vm.pause", "pause", "host", "change", 2, false},
	record.Unpause:           {"vm-unpause", "vm.unpause", "unpause", "host", "change", 2, false},
	record.Migrate:           {"vm-migrate", "vm.migrate", "migration", "host", "change", 3, false},
	record.Export:            {"vm-export", "vm.export", "export", "configuration", "access", 5, false},
	record.ConvertToTemplate: {"vm-convert-to-template", "vm.convert_to_template", "conversion to template", "configuration", "change", 3, false},
	record.Destroy:           {"vm-destroy", "vm.destroy", "destroy", "configuration", "deletion", 6, false},
	record.Other:             {"vm-other", "vm.other", "operation", "host", "change", 2, false},
}

// SpecOf returns the vocabulary of activity a; an unknown activity gets the
// one of record.Other.
func SpecOf(a record.Activity) Spec {
	// a switch compiles to a few comparisons; a map lookup costs ~20 ns a record
	switch a {
	case record.Create:
		return specArr[0]
	case record.Import:
		return specArr[1]
	case record.Clone:
		return specArr[2]
	case record.Copy:
		return specArr[3]
	case record.Snapshot:
		return specArr[4]
	case record.Checkpoint:
		return specArr[5]
	case record.Revert:
		return specArr[6]
	case record.Start:
		return specArr[7]
	case record.Shutdown:
		return specArr[8]
	case record.Reboot:
		return specArr[9]
	case record.Suspend:
		return specArr[10]
	case record.Resume:
		return specArr[11]
	case record.Pause:
		return specArr[12]
	case record.Unpause:
		return specArr[13]
	case record.Migrate:
		return specArr[14]
	case record.Export:
		return specArr[15]
	case record.ConvertToTemplate:
		return specArr[16]
	case record.Destroy:
		return specArr[17]
	}
	return specArr[18]
}

// specArr holds specs in the order of SpecOf's switch.
var specArr = func() (out [19]Spec) {
	for i, a := range []record.Activity{record.Create, record.Import, record.Clone, record.Copy, record.Snapshot,
		record.Checkpoint, record.Revert, record.Start, record.Shutdown, record.Reboot, record.Suspend, record.Resume,
		record.Pause, record.Unpause, record.Migrate, record.Export, record.ConvertToTemplate, record.Destroy, record.Other} {
		s := specs[a]
		s.sensitive = Sensitive(a)
		out[i] = s
	}
	return out
}()

// Sensitive activities move a VM's data somewhere or erase it: a refusal or
// failure of one is a stronger signal.
func Sensitive(a record.Activity) bool {
	switch a {
	case record.Clone, record.Copy, record.Export, record.Destroy, record.Revert, record.Import:
		return true
	}
	return false
}

// Severity is the CEF severity (0-10) of a record: the activity's base for a
// success, +1 when cancelled, +2 when failed (a failure may be a probe), and
// 8 for a denied sensitive operation, 7 for any other denied one.
func Severity(a record.Activity, res record.Result) int {
	return SpecOf(a).SeverityOf(res)
}

// SeverityOf is Severity for the activity whose spec sp is.
func (sp Spec) SeverityOf(res record.Result) int {
	s := sp.Severity
	switch res {
	case record.Cancelled:
		s++
	case record.Failure:
		s += 2
	case record.Denied:
		if sp.sensitive {
			return 8
		}
		return 7
	}
	if s > 10 {
		s = 10
	}
	return s
}

// Outcome maps a result to ECS event.outcome / CEF outcome: cancelled and
// denied are failures (the reason is kept elsewhere).
func Outcome(res record.Result) string {
	switch res {
	case record.Success:
		return "success"
	case record.Failure, record.Cancelled, record.Denied:
		return "failure"
	}
	return "unknown"
}

// ErrorCode returns the XAPI error code that starts an error text
// ("VM_BAD_POWER_STATE: ..." gives "VM_BAD_POWER_STATE"), or "".
func ErrorCode(msg string) string {
	i := 0
	for i < len(msg) {
		c := msg[i]
		if (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' {
			i++
			continue
		}
		break
	}
	if i < 3 || (i < len(msg) && msg[i] != ':' && msg[i] != ' ' && msg[i] != '(' && msg[i] != ',' && msg[i] != ']') {
		return ""
	}
	return msg[:i]
}

// ResultWord is how messages and CEF names end: "succeeded", "failed",
// "cancelled", "denied".
func ResultWord(res record.Result) string {
	switch res {
	case record.Success:
		return "succeeded"
	case record.Failure:
		return "failed"
	case record.Cancelled:
		return "cancelled"
	case record.Denied:
		return "denied"
	}
	return "ended"
}

// MaxMessageParts bounds what MessageParts writes.
const MaxMessageParts = 16

// MessageParts fills p with the pieces of the record's human message, to be
// concatenated in order, and returns how many it wrote. The pieces are raw
// (unescaped) strings; each format escapes them as it writes them, so the
// message costs no allocation. Example: "clone of VM web-01 from base-01 on
// host xen1 in pool lab succeeded".
func MessageParts(r *record.Record, c *Context, p *[MaxMessageParts]string) int {
	n := 0
	add := func(s ...string) {
		for _, x := range s {
			p[n] = x
			n++
		}
	}
	sp := SpecOf(r.Activity)
	if r.Activity == record.Other && r.Operation != "" {
		add("operation ", r.Operation)
	} else {
		add(sp.Noun)
	}
	vm := r.VMName
	if vm == "" {
		vm = r.VMUUID
	}
	if vm == "" {
		vm = "(unknown)"
	}
	add(" of VM ", vm)
	if r.ParentVMUUID != "" {
		parent := r.ParentVMUUID
		if c != nil && c.ParentName != "" {
			parent = c.ParentName
		}
		add(" from ", parent)
	}
	if r.DestinationHostUUID != "" {
		dest := r.DestinationHostUUID
		if c != nil && c.DestinationHostName != "" {
			dest = c.DestinationHostName
		}
		add(" to host ", dest)
	}
	if h := HostName(r, c); h != "" {
		add(" on host ", h)
	}
	if c != nil && c.PoolName != "" {
		add(" in pool ", c.PoolName)
	}
	add(" ", ResultWord(r.Result))
	if r.Error != "" {
		add(": ", r.Error)
	}
	return n
}

// HostName is the XAPI host of the record: the record's own, else the context's.
func HostName(r *record.Record, c *Context) string {
	if r.HostName != "" {
		return r.HostName
	}
	if c != nil {
		return c.HostName
	}
	return ""
}

// ActorOf is who made the call: the context's fields where set, else the
// record's own actor.
func ActorOf(r *record.Record, c *Context) (name, id, addr, originator string) {
	if c != nil {
		name, id, addr, originator = c.ActorName, c.ActorID, c.ActorAddress, c.ActorOriginator
	}
	if a := r.Actor; a != nil {
		name, id, addr, originator = or(name, a.Name), or(id, a.SubjectID), or(addr, a.ClientIP), or(originator, a.Originator)
	}
	return
}

// ChainOf is the record's chain link: the context's where set, else the
// record's own.
func ChainOf(r *record.Record, c *Context) (seq int64, prev, hash string) {
	if c != nil {
		seq, prev, hash = c.ChainSeq, c.ChainPrev, c.ChainHash
	}
	if ch := r.Chain; ch != nil && hash == "" {
		seq, prev, hash = ch.Seq, ch.Prev, ch.Hash
	}
	return
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// NormMAC writes s into buf as a MAC address in upper case with sep between
// the bytes (CEF uses ':', ECS '-'), or reports false when s is not a 48-bit
// MAC written with ':' or '-'.
func NormMAC(buf *[17]byte, s string, sep byte) bool {
	if len(s) != 17 {
		return false
	}
	for i := 0; i < 17; i++ {
		c := s[i]
		if i%3 == 2 {
			if c != ':' && c != '-' {
				return false
			}
			buf[i] = sep
			continue
		}
		switch {
		case c >= '0' && c <= '9', c >= 'A' && c <= 'F':
		case c >= 'a' && c <= 'f':
			c -= 'a' - 'A'
		default:
			return false
		}
		buf[i] = c
	}
	return true
}
