package audit

import (
	"context"
)

// Source kinds of an Entry.
const (
	FromHTTP   = "http"   // GET /audit_log
	FromFile   = "file"   // an audit.log file (or a collector's copy)
	FromSyslog = "syslog" // a forwarded syslog message
)

// Entry is one audit line and where it came from.
type Entry struct {
	Line     Line   // owns its memory (a Clone)
	HostName string // the host whose log holds it
	HostUUID string // "" when the source does not know it
	Source   string // FromHTTP, FromFile, FromSyslog
	// Replayed: delivered before a restart, sent again (FetchConfig.Rewarm)
	// only so that an emptied Attributor knows it again; its denied record,
	// if any, is one the store already has.
	Replayed bool
}

// Batch is what a source hands its Sink: parsed lines, and the position to
// persist with whatever the sink derives from them.
type Batch struct {
	PoolUUID string
	Entries  []Entry
	// State holds agent_state keys and values (the source's position). The
	// sink stores them in the same transaction as what it derives from
	// Entries, so a restart neither re-reads nor skips; the source moves
	// on only when the sink returns nil.
	State map[string]string
	// Bad is how many malformed lines this batch skipped (counted, never
	// fatal); BadSample is the first one's error.
	Bad       int
	BadSample error
}

// Sink receives batches. An error makes the source keep its position (and
// re-deliver those lines later).
type Sink func(ctx context.Context, b *Batch) error

// StateReader reads persisted positions (lineage.Store has this method).
type StateReader interface {
	AgentState(ctx context.Context, key string) (string, error)
}
