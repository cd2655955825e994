// Package record defines the lifecycle record: the unit vmlineage stores,
// ships and reasons about (the paper's Table 2, extended). Every other package
// speaks in records; this one depends on nothing but the standard library.
package record

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Activity is the normalised lifecycle activity of a record.
type Activity string

// The activities of the record schema. Anything else is Other with the raw
// operation name kept in Record.Operation.
const (
	Create            Activity = "create"
	Import            Activity = "import"
	Clone             Activity = "clone"
	Copy              Activity = "copy"
	Snapshot          Activity = "snapshot"
	Checkpoint        Activity = "checkpoint"
	Revert            Activity = "revert"
	Start             Activity = "start"
	Shutdown          Activity = "shutdown"
	Reboot            Activity = "reboot"
	Suspend           Activity = "suspend"
	Resume            Activity = "resume"
	Pause             Activity = "pause"
	Unpause           Activity = "unpause"
	Migrate           Activity = "migrate"
	Export            Activity = "export"
	ConvertToTemplate Activity = "convert_to_template"
	Destroy           Activity = "destroy"
	Other             Activity = "other"
)

// Activities lists every activity in schema order.
var Activities = []Activity{Create, Import, Clone, Copy, Snapshot, Checkpoint, Revert,
	Start, Shutdown, Reboot, Suspend, Resume, Pause, Unpause, Migrate, Export,
	ConvertToTemplate, Destroy, Other}

// Creating reports whether the activity brings a new VM into the family tree:
// for these vm_uuid is the new VM and parent_vm_uuid the VM it came from.
func (a Activity) Creating() bool {
	switch a {
	case Create, Import, Clone, Copy, Snapshot, Checkpoint:
		return true
	}
	return false
}

// Valid reports whether a is one of the schema's activities.
func (a Activity) Valid() bool {
	for _, x := range Activities {
		if a == x {
			return true
		}
	}
	return false
}

// ParseActivity accepts an activity name as written in records and on the
// command line.
func ParseActivity(s string) (Activity, error) {
	a := Activity(strings.ToLower(strings.TrimSpace(s)))
	if !a.Valid() {
		return "", fmt.Errorf("unknown activity %q (want one of %s)", s, activityList())
	}
	return a, nil
}

func activityList() string {
	parts := make([]string, len(Activities))
	for i, a := range Activities {
		parts[i] = string(a)
	}
	return strings.Join(parts, ", ")
}

// Result is how the operation ended.
type Result string

// Results. Denied is set when the RBAC audit log shows the call was refused.
const (
	Success   Result = "success"
	Failure   Result = "failure"
	Cancelled Result = "cancelled"
	Denied    Result = "denied"
)

// Source says where a record was learnt from.
type Source string

// Sources.
const (
	SourceXAPI   Source = "xapi"
	SourceLog    Source = "xensource.log"
	SourceResync Source = "resync"
	// SourceAudit is a record known only from the RBAC audit log: a call
	// refused (DENIED) before any task reached the pool's database.
	SourceAudit Source = "audit.log"
)

// Actor is who made the XAPI call behind a record, from the RBAC audit log
// (joined on the task's short id). The event stream has no actor; the audit
// log has no result: joined they give both.
type Actor struct {
	// Name is the session's subject name: "root", "DOMAIN\\user",
	// "__dom0__vmss", or "OpaqueRef:<host>" for xapi's own sub-calls.
	Name string `json:"name,omitempty"`
	// SubjectID is "LOCAL_SUPERUSER", "LOCAL_SESSION" or an AD SID.
	SubjectID string `json:"subject_id,omitempty"`
	// Originator is the client's session originator (xe: "cli"), where a
	// session.create audit line or a xensource.log Session.create line told.
	Originator string `json:"originator,omitempty"`
	// ClientIP is the caller's address from the audit line's thread field
	// (builds since Nov 2020; absent for the unix socket and internal calls).
	ClientIP string `json:"client_ip,omitempty"`
	// TrackID is the MD5 of the session ref, as audit.log and xensource.log
	// print it: the key that joins a session's calls.
	TrackID string `json:"trackid,omitempty"`
}

// Record is one lifecycle record. Field names are the public contract of the
// JSON schema in schema/record.schema.json; add fields, never rename them.
type Record struct {
	ID                  string    `json:"id"`
	PoolUUID            string    `json:"pool_uuid"`
	HostUUID            string    `json:"host_uuid,omitempty"`
	HostName            string    `json:"host_name,omitempty"`
	VMUUID              string    `json:"vm_uuid"`
	VMName              string    `json:"vm_name,omitempty"`
	ParentVMUUID        string    `json:"parent_vm_uuid,omitempty"`
	Activity            Activity  `json:"activity"`
	Operation           string    `json:"operation,omitempty"`
	Start               time.Time `json:"start"`
	End                 time.Time `json:"end"`
	Result              Result    `json:"result"`
	Error               string    `json:"error,omitempty"`
	TaskUUID            string    `json:"task_uuid,omitempty"`
	TaskID              string    `json:"task_id,omitempty"`
	Source              Source    `json:"source"`
	DestinationHostUUID string    `json:"destination_host_uuid,omitempty"`
	// SnapshotUUID is the snapshot a revert went back to.
	SnapshotUUID string `json:"snapshot_uuid,omitempty"`
	// Unknown names the fields the source could not reveal (for example the
	// new VM of a clone seen only in xensource.log), so a consumer can tell
	// "unknown" from "empty".
	Unknown []string `json:"unknown,omitempty"`
	// Actor is who made the call (nil: not attributed, e.g. no audit line).
	Actor *Actor `json:"actor,omitempty"`
	// Chain is the record's place in the store's hash chain, set once the
	// store sealed it (not part of what the chain hashes: see ChainHash).
	Chain *Chain `json:"chain,omitempty"`
}

// TimeLayout is the on-the-wire time format: RFC 3339, UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// MarshalJSON writes times in TimeLayout (UTC, millisecond precision).
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record
	return json.Marshal(struct {
		plain
		Start string `json:"start"`
		End   string `json:"end"`
	}{plain(r), FormatTime(r.Start), FormatTime(r.End)})
}

// UnmarshalJSON reads what MarshalJSON writes (any RFC 3339 time is accepted).
func (r *Record) UnmarshalJSON(b []byte) error {
	type plain Record
	var aux struct {
		plain
		Start string `json:"start"`
		End   string `json:"end"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*r = Record(aux.plain)
	var err error
	if r.Start, err = ParseTime(aux.Start); err != nil {
		return fmt.Errorf("record %s: start: %w", r.ID, err)
	}
	if r.End, err = ParseTime(aux.End); err != nil {
		return fmt.Errorf("record %s: end: %w", r.ID, err)
	}
	return nil
}

// FormatTime renders t in TimeLayout; the zero time renders as "".
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(TimeLayout)
}

// ParseTime parses an RFC 3339 time; "" is the zero time.
func ParseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// TaskShortID returns the 12 hex digits by which xensource.log and audit.log
// name a task: characters 0-7 and 9-12 of the UUID inside its ref (xen-api
// ocaml/xapi-types/ref.ml really_pretty_and_small prints them after "R:" for
// an OpaqueRef and after "D:" for a DummyRef:|uuid|name, the key a setter
// such as VM.set_is_a_template puts in current_operations). Both XAPI and
// the logs carry it, so record ids derive from it. Any other ref yields "".
func TaskShortID(ref string) string {
	u, ok := strings.CutPrefix(ref, "OpaqueRef:")
	if !ok {
		if u, ok = strings.CutPrefix(ref, "DummyRef:|"); !ok {
			return ""
		}
	}
	if len(u) < 13 || u[8] != '-' {
		return ""
	}
	return strings.ToLower(u[0:8] + u[9:13])
}

// ID derives a record id from the pool and the task's short id, and an index
// for a task that yields several records (an import of several VMs). The same
// operation seen twice, through XAPI or through the logs, gets the same id.
func ID(poolUUID, taskShortID string, index int) string {
	return hashID("task", poolUUID, taskShortID, fmt.Sprint(index))
}

// ResyncID derives the id of a record that a resync inferred (no task known):
// from the pool, the VM, the activity and the time it was noticed.
func ResyncID(poolUUID, vmUUID string, a Activity, at time.Time) string {
	return hashID("resync", poolUUID, vmUUID, string(a), fmt.Sprint(at.UnixMilli()))
}

func hashID(parts ...string) string {
	h := sha256.New()
	h.Write([]byte("vmlineage/v1"))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Validate checks what a record must hold before it is stored or shipped.
func (r *Record) Validate() error {
	var missing []string
	if r.ID == "" {
		missing = append(missing, "id")
	}
	if r.PoolUUID == "" {
		missing = append(missing, "pool_uuid")
	}
	if r.VMUUID == "" && !r.IsUnknown("vm_uuid") {
		missing = append(missing, "vm_uuid")
	}
	if r.Start.IsZero() {
		missing = append(missing, "start")
	}
	if len(missing) > 0 {
		return fmt.Errorf("record %q: missing %s", r.ID, strings.Join(missing, ", "))
	}
	if !r.Activity.Valid() {
		return fmt.Errorf("record %s: invalid activity %q", r.ID, r.Activity)
	}
	if r.Activity == Other && r.Operation == "" {
		return fmt.Errorf("record %s: activity other needs the raw operation name", r.ID)
	}
	switch r.Result {
	case Success, Failure, Cancelled, Denied:
	default:
		return fmt.Errorf("record %s: invalid result %q", r.ID, r.Result)
	}
	switch r.Source {
	case SourceXAPI, SourceLog, SourceResync, SourceAudit:
	default:
		return fmt.Errorf("record %s: invalid source %q", r.ID, r.Source)
	}
	if !r.End.IsZero() && r.End.Before(r.Start) {
		return fmt.Errorf("record %s: end %s before start %s", r.ID, FormatTime(r.End), FormatTime(r.Start))
	}
	return nil
}

// IsUnknown reports whether field is listed in r.Unknown.
func (r *Record) IsUnknown(field string) bool {
	for _, f := range r.Unknown {
		if f == field {
			return true
		}
	}
	return false
}
