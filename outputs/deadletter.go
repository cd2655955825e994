package outputs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DeadLetter appends items an output gave up on to a JSON-lines file, one
// object per item with the reason, so nothing is dropped silently. Each
// write is fsynced before it returns: a dead-lettered item counts as handled.
type DeadLetter struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

// DeadLetterEntry is one line of the dead-letter file.
type DeadLetterEntry struct {
	Time   time.Time       `json:"time"`
	Output string          `json:"output"`
	ID     string          `json:"id"`
	Error  string          `json:"error"`
	Status int             `json:"status,omitempty"`
	Event  json.RawMessage `json:"event,omitempty"`   // payload when it is JSON
	Raw    string          `json:"payload,omitempty"` // payload otherwise
	// ItemTime is the record's own time (the syslog header's), kept so a
	// redelivered entry goes out as it would have.
	ItemTime time.Time `json:"item_time,omitzero"`
}

// OpenDeadLetter opens (creating) the file at path for appending.
func OpenDeadLetter(path string) (*DeadLetter, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("dead letter: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("dead letter: %w", err)
	}
	return &DeadLetter{path: path, f: f}, nil
}

// Path is the file written to.
func (d *DeadLetter) Path() string { return d.path }

// Write records the entries and fsyncs.
func (d *DeadLetter) Write(entries []DeadLetterEntry) error {
	if len(entries) == 0 {
		return nil
	}
	var buf []byte
	for _, e := range entries {
		if e.Time.IsZero() {
			e.Time = time.Now().UTC()
		}
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("dead letter %s: %w", d.path, err)
		}
		buf = append(append(buf, b...), '\n')
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return ErrClosed
	}
	if err := d.reopenIfMoved(); err != nil {
		return fmt.Errorf("dead letter %s: %w", d.path, err)
	}
	if _, err := d.f.Write(buf); err != nil {
		return fmt.Errorf("dead letter %s: %w", d.path, err)
	}
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("dead letter %s: %w", d.path, err)
	}
	return nil
}

// reopenIfMoved opens the path again when the file open is no longer there
// (removed, or replaced by an editor's save): entries written to the old
// one would be seen by nobody.
func (d *DeadLetter) reopenIfMoved() error {
	cur, err := d.f.Stat()
	if err != nil {
		return err
	}
	if now, err := os.Stat(d.path); err == nil && os.SameFile(cur, now) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(d.path), 0o750); err != nil { // the directory may be gone too
		return err
	}
	f, err := os.OpenFile(d.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	d.f.Close()
	d.f = f
	return nil
}

// Entry builds a dead-letter entry for it, keeping a JSON payload as JSON.
func Entry(output string, it Item, status int, reason string) DeadLetterEntry {
	e := DeadLetterEntry{Output: output, ID: it.ID, Error: reason, Status: status, ItemTime: it.Time}
	if json.Valid(it.Payload) {
		e.Event = json.RawMessage(it.Payload)
	} else {
		e.Raw = string(it.Payload)
	}
	return e
}

// Close closes the file.
func (d *DeadLetter) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}
