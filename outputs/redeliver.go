package outputs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmlineage/vmlineage/internal/durable"
)

// A dead-letter file is only ever appended to, by the agent while it runs,
// so redelivery never rewrites it: a mark beside it (MarkPath) holds the
// byte offset up to which its entries went out again, and a digest of the
// file's first line, which tells the file the offset belongs to from one
// written anew under the same name. Entries the output refuses once more
// are appended by the output itself, after the mark, and wait for the next
// run. Two runs never overlap (a lock beside the mark).

// MarkPath is the file holding how far the dead-letter file at path was
// redelivered.
func MarkPath(path string) string { return path + ".redelivered" }

// entryStart begins every dead-letter line (Time is DeadLetterEntry's first
// field): where an entry starts when a torn write glued it to a fragment.
var entryStart = []byte(`{"time":`)

// RedeliverOptions tune Redeliver.
type RedeliverOptions struct {
	// Batch is the number of entries per Send (default 500).
	Batch int
	// DryRun reads and counts the pending entries without sending them or
	// moving the mark.
	DryRun bool
	// Progress, when set, is called after each batch the output took.
	Progress func(sent int)
}

// RedeliverStats says what a run found and did.
type RedeliverStats struct {
	From, To int64 // byte offsets of the pending entries read (To: the mark after the run)
	Pending  int   // entries after the mark when the run began (complete lines only)
	Sent     int   // entries the output took (delivered, or dead-lettered again by it)
	// Replaced says the mark belonged to an earlier file of that name: the
	// run started from the top of this one.
	Replaced bool
	// Torn counts fragments of entries whose write was cut short (disk
	// full, a crash), skipped: the output wrote those entries again whole.
	Torn int
	// ByReason counts the pending entries by status and error, for an
	// operator deciding whether the cause is fixed.
	ByReason map[string]int
}

// Redeliver sends the entries of the dead-letter file at path written after
// its mark through out, oldest first, and moves the mark past each batch out
// took. It stops at the first batch out fails (the mark stays before it: run
// again), and at a line that is not a dead-letter entry (an error naming the
// line; nothing after it is sent).
//
// A Confirmer output (plain syslog) has each batch confirmed ConfirmAfter
// after it went out; the mark moves only past confirmed batches.
func Redeliver(ctx context.Context, path string, out Output, opt RedeliverOptions) (RedeliverStats, error) {
	st := RedeliverStats{ByReason: map[string]int{}}
	if opt.Batch <= 0 {
		opt.Batch = 500
	}
	if !opt.DryRun { // counting needs no lock; it moves nothing
		lock, err := os.OpenFile(MarkPath(path)+".lock", os.O_CREATE|os.O_RDWR, 0o640)
		if err != nil {
			return st, fmt.Errorf("redeliver %s: %w", path, err)
		}
		defer lock.Close()
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return st, fmt.Errorf("redeliver %s: another redelivery of this file is running (%w)", path, err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return st, fmt.Errorf("redeliver: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, fmt.Errorf("redeliver: %w", err)
	}
	first, err := firstLineDigest(f)
	if err != nil {
		return st, fmt.Errorf("redeliver: %w", err)
	}
	from, digest, err := readMark(path)
	if err != nil {
		return st, err
	}
	if from > 0 && (digest != first || from > fi.Size()) {
		// Removed and written anew (or cut): the offset is another file's.
		// A mark without a digest (written by hand) cannot tell: from the
		// top too, since a repeat is harmless and a skip is not.
		from, st.Replaced = 0, true
	}
	st.From, st.To = from, from
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return st, fmt.Errorf("redeliver: %w", err)
	}
	// Read only what is there now: the agent may be appending, and a line
	// it has not finished is left for the next run.
	r := bufio.NewReader(io.LimitReader(f, fi.Size()-from))
	type batch struct {
		items  []Item
		end    int64
		sentAt time.Time
	}
	var (
		cur     batch
		pending []batch // sent, waiting for confirmation
		off     = from
		line    = 0
		lineErr error
	)
	conf, _ := out.(Confirmer)
	confirmAfter := time.Duration(0)
	if conf != nil {
		confirmAfter = conf.ConfirmAfter()
	}
	commit := func(end int64) error {
		if err := writeMark(path, end, first); err != nil {
			return err
		}
		st.To = end
		return nil
	}
	took := func(b batch) error {
		st.Sent += len(b.items)
		if opt.Progress != nil {
			opt.Progress(st.Sent)
		}
		return commit(b.end)
	}
	// confirm moves the mark past the sent batches ConfirmAfter old (all
	// of them with wait, after waiting for the last).
	confirm := func(wait bool) error {
		for len(pending) > 0 {
			b := pending[0]
			due := b.sentAt.Add(confirmAfter)
			if !wait && time.Now().Before(due) {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("redeliver %s: stopped before the receiver confirmed %d batches; the mark stays at byte %d: %w", path, len(pending), st.To, ctx.Err())
			case <-time.After(time.Until(due)):
			}
			if err := conf.Confirm(b.sentAt); err != nil {
				return fmt.Errorf("redeliver %s through %s: the connection that carried %d entries did not last, so they may be lost; the mark stays at byte %d: run again: %w",
					path, out.Name(), len(b.items), st.To, err)
			}
			pending = pending[1:]
			if err := took(b); err != nil {
				return err
			}
		}
		return nil
	}
	send := func(b batch) error {
		if len(b.items) == 0 {
			return nil
		}
		if err := out.Send(ctx, b.items); err != nil {
			again := ""
			if len(pending) > 0 {
				again = fmt.Sprintf(" (and %d sent before it, unconfirmed, go again next run)", len(pending))
			}
			return fmt.Errorf("redeliver %s through %s: %d entries not sent%s, the mark stays at byte %d: %w", path, out.Name(), len(b.items), again, st.To, err)
		}
		if confirmAfter > 0 {
			b.sentAt = time.Now()
			pending = append(pending, b)
			return confirm(false)
		}
		return took(b)
	}
	for {
		raw, err := r.ReadBytes('\n')
		if err == io.EOF {
			break // a last line without its newline is still being written
		}
		if err != nil {
			return st, fmt.Errorf("redeliver: %w", err)
		}
		line++
		start := off
		off += int64(len(raw))
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 {
			cur.end = off
			continue
		}
		e, err := parseEntry(raw)
		if err != nil {
			// A write cut short leaves a fragment the next entry is glued
			// to: the entry after it is whole, the fragment is skipped.
			// The first start that reads as a whole entry is it (a later
			// one may be an object inside that entry's event).
			for k := 1; k < len(raw); k++ {
				j := bytes.Index(raw[k:], entryStart)
				if j < 0 {
					break
				}
				k += j
				if e2, err2 := parseEntry(raw[k:]); err2 == nil {
					e, err = e2, nil
					st.Torn++
					break
				}
			}
		}
		if err != nil {
			lineErr = fmt.Errorf("redeliver %s: line %d after the mark (byte %d) is not a dead-letter entry: %v; nothing from it on was sent (the file must not be edited while the agent runs: it appends to the file it opened)",
				path, line, start, err)
			break
		}
		st.Pending++
		reason := e.Error
		if e.Status != 0 {
			reason = strconv.Itoa(e.Status) + " " + reason
		}
		st.ByReason[reason]++
		cur.items = append(cur.items, e.item())
		cur.end = off
		if len(cur.items) >= opt.Batch && !opt.DryRun {
			if err := send(cur); err != nil {
				return st, err
			}
			cur = batch{}
		}
	}
	if opt.DryRun {
		return st, lineErr
	}
	if len(cur.items) > 0 {
		if err := send(cur); err != nil {
			return st, errors.Join(err, lineErr)
		}
	} else if cur.end > st.To && len(pending) == 0 {
		// Only blank lines since the last batch.
		if err := commit(cur.end); err != nil {
			return st, err
		}
	}
	if err := confirm(true); err != nil {
		return st, err
	}
	return st, lineErr
}

func parseEntry(raw []byte) (DeadLetterEntry, error) {
	var e DeadLetterEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		return e, err
	}
	if e.Event == nil && e.Raw == "" {
		return e, errors.New("no event or payload in it")
	}
	return e, nil
}

// PendingDeadLetters counts the entries of the dead-letter file at path not
// yet redelivered, by status and error, as a dry run of Redeliver does.
func PendingDeadLetters(path string) (RedeliverStats, error) {
	return Redeliver(context.Background(), path, nil, RedeliverOptions{DryRun: true})
}

// item is the entry as it was on its way to the output.
func (e *DeadLetterEntry) item() Item {
	it := Item{ID: e.ID, Time: e.ItemTime}
	if e.Event != nil {
		it.Payload = []byte(e.Event)
	} else {
		it.Payload = []byte(e.Raw) // as dead-lettered, byte for byte
	}
	if it.Time.IsZero() && e.Event != nil {
		// Entries written before item_time existed: an ECS document's time.
		var ts struct {
			T time.Time `json:"@timestamp"`
		}
		if json.Unmarshal(e.Event, &ts) == nil {
			it.Time = ts.T
		}
	}
	if it.Time.IsZero() {
		it.Time = e.Time
	}
	return it
}

// firstLineDigest names the file by its first whole line (an entry with its
// time and id): a file written anew under the same name has another one.
// "" while the file has no whole line.
func firstLineDigest(f *os.File) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	k := bytes.IndexByte(buf[:n], '\n')
	if k < 0 {
		if n == len(buf) { // a first line over 64 KiB: its head names it
			k = n
		} else {
			return "", nil
		}
	}
	sum := sha256.Sum256(buf[:k])
	return hex.EncodeToString(sum[:8]), nil
}

// readMark returns the offset and the first-line digest the mark holds
// ("<offset> <digest>"; a bare offset gives no digest).
func readMark(path string) (int64, string, error) {
	b, err := os.ReadFile(MarkPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("redeliver: %w", err)
	}
	f := strings.Fields(string(b))
	var n int64 = -1
	if len(f) >= 1 && len(f) <= 2 {
		n, err = strconv.ParseInt(f[0], 10, 64)
	}
	if err != nil || n < 0 {
		return 0, "", fmt.Errorf("redeliver: the mark %s holds %q, not a byte offset", MarkPath(path), bytes.TrimSpace(b))
	}
	if len(f) == 1 {
		return n, "", nil
	}
	return n, f[1], nil
}

// writeMark replaces the mark durably: a crash leaves the old or the new
// one, so at most the last batch goes out again.
func writeMark(path string, off int64, digest string) error {
	mark := MarkPath(path)
	tmp := mark + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(off, 10)+" "+digest+"\n"), 0o640); err != nil {
		return fmt.Errorf("redeliver: %w", err)
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, mark)
	}
	if err == nil {
		err = durable.SyncDir(filepath.Dir(mark))
	}
	if err != nil {
		return fmt.Errorf("redeliver: mark %s: %w", mark, err)
	}
	return nil
}
