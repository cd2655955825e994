// Package outputs defines the contract between vmlineage's durable spool and
// the places records are shipped to (Elasticsearch, syslog, files, stdout).
// Outputs receive already-encoded payloads: encoding (ECS, CEF) lives in
// formats/ and knows nothing of delivery.
package outputs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Item is one encoded record on its way to an output.
type Item struct {
	// ID is the record id; Elasticsearch uses it as the document _id so a
	// re-sent record is recognised (409) instead of doubled.
	ID string
	// Payload is the encoded record (ECS JSON, CEF line, ...), without a
	// trailing newline.
	Payload []byte
	// Time is the record's event time (syslog header timestamp).
	Time time.Time
}

// Output delivers items. Implementations are safe for one caller at a time;
// the Pipeline is that caller.
type Output interface {
	// Name identifies the output in logs, health and dead letters.
	Name() string
	// Send returns nil only when every item is durably delivered or written
	// to the dead-letter file. On error the caller sends the same items
	// again later, so delivery is at-least-once; an output that can tell
	// (Elasticsearch by _id) makes the repeat harmless.
	Send(ctx context.Context, items []Item) error
	// Close releases connections and files.
	Close() error
}

// Confirmer is an output whose Send returning nil does not yet mean the
// receiver has the items: plain syslog has no acknowledgement, and a
// receiver that stops loses what sat unread in its socket, although the
// write succeeded. The Shipper acknowledges such items in the spool only
// ConfirmAfter after they were sent, and only when Confirm then says the
// connection that carried them is still up; otherwise it sends them again
// from the spool. So nothing is lost across a receiver's stop or the
// agent's SIGKILL, at the price of repeats within RepeatWindow.
//
// For that bound a Confirmer's Send stops writing at its context's
// deadline (the Shipper sets it), and it never carries items on a new
// connection while what the previous one carried is unconfirmed: it
// returns an error, and the Shipper sends everything unacknowledged again
// first.
type Confirmer interface {
	// ConfirmAfter is how long after Send items may still be lost (0: Send
	// returning nil is delivery).
	ConfirmAfter() time.Duration
	// Confirm reports whether the items sent at sentAt went out on a
	// connection still alive now (nil), or may have been lost (an error).
	Confirm(sentAt time.Time) error
}

// RepeatWindow is the at-least-once window of a Confirmer that confirms
// confirmAfter after a write: the Shipper ends every write within it of
// the start of the Send of the oldest batch not yet acknowledged, so
// between a copy of a record and its repeat a receiver takes only records
// written within RepeatWindow after that copy (outputs/README.md). Twice
// the delay: a batch is confirmed confirmAfter after its Send returned, and
// the Sends meanwhile get at least confirmAfter to write.
func RepeatWindow(confirmAfter time.Duration) time.Duration { return 2 * confirmAfter }

// HealthReporter is implemented by outputs that count their work.
type HealthReporter interface {
	Health() Health
}

// Health is a snapshot of an output's counters.
type Health struct {
	Sent          uint64    `json:"sent"`
	Failed        uint64    `json:"failed"`
	Retried       uint64    `json:"retried"`
	DeadLettered  uint64    `json:"dead_lettered"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitempty"`
}

// Counters accumulate Health; embed one in an output. Safe for concurrent use.
type Counters struct {
	sent, failed, retried, dead atomic.Uint64
	mu                          sync.Mutex
	lastErr                     string
	lastErrTime                 time.Time
}

// AddSent counts n items delivered.
func (c *Counters) AddSent(n int) { c.sent.Add(uint64(n)) }

// AddRetried counts n items sent again.
func (c *Counters) AddRetried(n int) { c.retried.Add(uint64(n)) }

// AddDeadLettered counts n items written to the dead-letter file.
func (c *Counters) AddDeadLettered(n int) { c.dead.Add(uint64(n)) }

// Fail counts n items whose delivery attempt failed and remembers err.
func (c *Counters) Fail(n int, err error) {
	c.failed.Add(uint64(n))
	if err == nil {
		return
	}
	c.mu.Lock()
	c.lastErr = err.Error()
	c.lastErrTime = time.Now().UTC()
	c.mu.Unlock()
}

// Health returns a snapshot.
func (c *Counters) Health() Health {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Health{
		Sent: c.sent.Load(), Failed: c.failed.Load(), Retried: c.retried.Load(),
		DeadLettered: c.dead.Load(), LastError: c.lastErr, LastErrorTime: c.lastErrTime,
	}
}

// ErrClosed is returned by an output or spool used after Close.
var ErrClosed = errors.New("outputs: closed")
