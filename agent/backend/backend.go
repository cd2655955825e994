// Package backend is the lineage that alert enrichment reads: the alert
// matcher (which VM held this IP at time T?), the context sent with each
// alert (the matched VMs' families and their states then, their records)
// and the Lineage service the detector plugins call over the broker. Two
// implementations: storebackend (the local lineage store, the default) and
// esbackend (the VM documents the Elasticsearch output writes, so that one
// enrichment service sees the VMs of every pool). Config key
// lineage.backend chooses (store | elasticsearch).
package backend

import (
	"context"
	"errors"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// Names of the backends, as config key lineage.backend takes them.
const (
	Store         = "store"
	Elasticsearch = "elasticsearch"
)

// Kinds of key FindVMs takes: a VM uuid, or a value a VM held at a time.
const (
	KindUUID = "uuid"
	KindName = "name"
	KindIP   = "ip"
	KindMAC  = "mac"
)

// ErrNotFound is plugins.ErrNotFound: a VM the backend does not know.
var ErrNotFound = plugins.ErrNotFound

// Lineage is what enrichment reads. Implementations are safe for
// concurrent use. Errors for unknown VMs wrap ErrNotFound.
type Lineage interface {
	// The detectors' view (plugins.Lineage without AlertedVMs, which the
	// alert log answers).
	VM(ctx context.Context, uuid string) (plugins.VM, error)
	Ancestors(ctx context.Context, uuid string) ([]plugins.VM, error)
	Descendants(ctx context.Context, uuid string) ([]plugins.VM, error)
	Siblings(ctx context.Context, uuid string) ([]plugins.VM, error)
	Family(ctx context.Context, uuid string) ([]plugins.VM, error)
	StatesAt(ctx context.Context, uuids []string, at time.Time) ([]plugins.VMState, error)
	Records(ctx context.Context, q plugins.RecordQuery) ([]record.Record, error)

	// FindVMs returns the uuids of the VMs that held value at time at:
	// kind KindUUID (the VM itself, when known), KindName, KindIP or
	// KindMAC (any notation; compared lower-case with colons).
	FindVMs(ctx context.Context, kind, value string, at time.Time) ([]string, error)
	// FamilyOf returns uuid's family with every member's state history;
	// nil and no error when it has more than limit members (limit > 0).
	// Backends may answer from a cache: Fresh keeps that exact.
	FamilyOf(ctx context.Context, uuid string, limit int) (*Family, error)
	// Fresh is called by the alert path once per alert, before its reads:
	// a backend that caches drops what was changed since.
	Fresh(ctx context.Context) error
	// RecordsOfVM returns the records of the VM (as VM or as parent)
	// started in [since, until), oldest first, at most limit.
	RecordsOfVM(ctx context.Context, uuid string, since, until time.Time, limit int) ([]record.Record, error)
	// RecordFacts is RecordsOfVM in brief (VM, activity, start), any order.
	RecordFacts(ctx context.Context, uuid string, since, until time.Time, limit int) ([]plugins.RecordFact, error)
	// AncestryAt returns the VM and its ancestors, nearest first up to the
	// family root, each with its state at time at.
	AncestryAt(ctx context.Context, uuid string, at time.Time) ([]Member, error)
	// FamilyUUIDs returns root and the uuids of every VM descending from
	// it, root first, at most limit+1 when limit > 0.
	FamilyUUIDs(ctx context.Context, root string, limit int) ([]string, error)
	// VMsAt returns the listed VMs with their states at time at, in the
	// order asked; unknown ones come back with only UUID and State.UUID set.
	VMsAt(ctx context.Context, uuids []string, at time.Time) ([]Member, error)

	Close() error
}

// Member is a VM of a family and its state at the time asked.
type Member struct {
	plugins.VM
	Depth int // generations below the family root
	State plugins.VMState
}

// Counter is implemented by backends that count the queries they make
// (the benchmark reports queries per alert).
type Counter interface {
	Queries() int64
}

// IsNotFound reports whether err says a VM is unknown.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
