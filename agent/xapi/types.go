// Package xapi is vmlineage's XenAPI client: login (following HOST_IS_SLAVE),
// the event.from loop with a persisted token, and the records of the classes
// the tracer needs. It speaks XML-RPC through github.com/kolo/xmlrpc, which
// can only decode XAPI's untyped values into typed structs, hence the typed
// Snapshot below (reference xapi.md section 2.3).
package xapi

import (
	"fmt"
	"strings"
	"time"
)

// NullRef is XAPI's null reference.
const NullRef = "OpaqueRef:NULL"

// IsNull reports whether ref names no object.
func IsNull(ref string) bool { return ref == "" || ref == NullRef }

// Classes the agent subscribes to in event.from.
var Classes = []string{"VM", "task", "host", "pool", "VIF", "VM_guest_metrics"}

// Snapshot is the union of the record fields vmlineage reads from the classes
// it subscribes to (VM, task, host, pool, VIF, VM_guest_metrics). One struct
// serves all of them because an event's snapshot has the shape of its class
// and kolo/xmlrpc needs a typed target; members a class lacks stay zero, and
// members the struct lacks are skipped by the decoder. Ints are strings:
// XAPI sends them untyped.
type Snapshot struct {
	UUID      string `xmlrpc:"uuid" json:"uuid"`
	NameLabel string `xmlrpc:"name_label" json:"name_label"`

	// VM
	PowerState        string            `xmlrpc:"power_state" json:"power_state"`
	ResidentOn        string            `xmlrpc:"resident_on" json:"resident_on"`
	IsATemplate       bool              `xmlrpc:"is_a_template" json:"is_a_template"`
	IsDefaultTemplate bool              `xmlrpc:"is_default_template" json:"is_default_template"`
	IsASnapshot       bool              `xmlrpc:"is_a_snapshot" json:"is_a_snapshot"`
	IsControlDomain   bool              `xmlrpc:"is_control_domain" json:"is_control_domain"`
	SnapshotOf        string            `xmlrpc:"snapshot_of" json:"snapshot_of"`
	SnapshotTime      time.Time         `xmlrpc:"snapshot_time" json:"-"`
	Parent            string            `xmlrpc:"parent" json:"parent"`
	CurrentOperations map[string]string `xmlrpc:"current_operations" json:"current_operations"`
	OtherConfig       map[string]string `xmlrpc:"other_config" json:"other_config"`
	VIFs              []string          `xmlrpc:"VIFs" json:"VIFs"`
	GuestMetrics      string            `xmlrpc:"guest_metrics" json:"guest_metrics"`
	Domid             string            `xmlrpc:"domid" json:"-"`

	// task
	Status    string    `xmlrpc:"status" json:"status"`
	Created   time.Time `xmlrpc:"created" json:"-"`
	Finished  time.Time `xmlrpc:"finished" json:"-"`
	Progress  float64   `xmlrpc:"progress" json:"progress"`
	Result    string    `xmlrpc:"result" json:"result"`
	ErrorInfo []string  `xmlrpc:"error_info" json:"error_info"`
	SubtaskOf string    `xmlrpc:"subtask_of" json:"subtask_of"`

	// host
	Hostname string `xmlrpc:"hostname" json:"hostname"`
	Address  string `xmlrpc:"address" json:"address"`

	// pool
	Master string `xmlrpc:"master" json:"master"`

	// VIF
	VM     string `xmlrpc:"VM" json:"VM"`
	MAC    string `xmlrpc:"MAC" json:"MAC"`
	Device string `xmlrpc:"device" json:"device"`

	// VM_guest_metrics
	Networks map[string]string `xmlrpc:"networks" json:"networks"`
}

// Event is one entry of an event.from batch. Class is lower case as XAPI
// sends it ("vm", "task", "host", "pool", "vif", "vm_guest_metrics").
// Snapshot is nil for "del".
type Event struct {
	ID        string    `xmlrpc:"id" json:"id"`
	Class     string    `xmlrpc:"class" json:"class"`
	Operation string    `xmlrpc:"operation" json:"operation"`
	Ref       string    `xmlrpc:"ref" json:"ref"`
	Snapshot  *Snapshot `xmlrpc:"snapshot" json:"snapshot"`
}

// EventBatch is the struct event.from returns.
type EventBatch struct {
	Events         []Event        `xmlrpc:"events" json:"events"`
	ValidRefCounts map[string]int `xmlrpc:"valid_ref_counts" json:"valid_ref_counts"`
	Token          string         `xmlrpc:"token" json:"token"`
}

// Error is a XenAPI failure: the ErrorDescription list of a Failure envelope.
type Error struct {
	Code   string
	Params []string
}

func (e *Error) Error() string {
	if len(e.Params) == 0 {
		return "XenAPI error " + e.Code
	}
	return fmt.Sprintf("XenAPI error %s [%s]", e.Code, strings.Join(e.Params, ", "))
}

// XenAPI error codes the agent reacts to.
const (
	ErrSessionInvalid   = "SESSION_INVALID"
	ErrAuthFailed       = "SESSION_AUTHENTICATION_FAILED"
	ErrHostIsSlave      = "HOST_IS_SLAVE"
	ErrEventsLost       = "EVENTS_LOST"
	ErrMethodUnknown    = "MESSAGE_METHOD_UNKNOWN"
	ErrTokenParse       = "EVENT_FROM_TOKEN_PARSE_FAILURE"
	ErrHandleInvalid    = "HANDLE_INVALID"
	ErrTaskCancelled    = "TASK_CANCELLED"
	ErrPermissionDenied = "RBAC_PERMISSION_DENIED"
)

// IsCode reports whether err is a XenAPI error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	for err != nil {
		if x, ok := err.(*Error); ok {
			e = x
			break
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return e != nil && e.Code == code
}

// Task status values.
const (
	TaskPending    = "pending"
	TaskSuccess    = "success"
	TaskFailure    = "failure"
	TaskCancelling = "cancelling"
	TaskCancelled  = "cancelled"
)

// VM power states.
const (
	Halted    = "Halted"
	Running   = "Running"
	Paused    = "Paused"
	Suspended = "Suspended"
)

// Epoch is XAPI's "not set" datetime (19700101T00:00:00Z).
var Epoch = time.Unix(0, 0).UTC()

// TimeSet reports whether an XAPI datetime is set (neither zero nor epoch).
func TimeSet(t time.Time) bool { return !t.IsZero() && !t.Equal(Epoch) }

// DateTimeLayout is XAPI's datetime text: no hyphens, second resolution, UTC.
const DateTimeLayout = "20060102T15:04:05Z"

// ParseResultRefs extracts the object refs from a task's result, which XAPI
// stores as an XML-RPC value fragment: "<value>OpaqueRef:…</value>" for a
// ref, an array of them for VM.import, "<value></value>" for void, "" on
// hosts too old to set it.
func ParseResultRefs(result string) []string {
	var refs []string
	s := result
	for {
		i := strings.Index(s, "OpaqueRef:")
		if i < 0 {
			return refs
		}
		s = s[i:]
		j := strings.IndexAny(s, "<\" \t\r\n")
		if j < 0 {
			j = len(s)
		}
		if ref := s[:j]; ref != NullRef {
			refs = append(refs, ref)
		}
		s = s[j:]
	}
}
