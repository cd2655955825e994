package outputs

import (
	"bufio"
	"bytes"
	"context"
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
// byte offset up to which its entries went out again. Entries the output
// refuses once more are appended by the output itself, after the mark, and
// wait for the next run. Nothing in the file is lost or sent twice by two
// runs (a lock on the mark keeps runs apart).

// MarkPath is the file holding how far the dead-letter file at path was
// redelivered.
func MarkPath(path string) string { return path + ".redelivered" }

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
// A Confirmer output (plain syslog) has the batches confirmed ConfirmAfter
// after the last one went out; the mark moves only past confirmed batches.
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
	from, err := readMark(path)
	if err != nil {
		return st, err
	}
	st.From, st.To = from, from
	f, err := os.Open(path)
	if err != nil {
		return st, fmt.Errorf("redeliver: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, fmt.Errorf("redeliver: %w", err)
	}
	if from > fi.Size() {
		return st, fmt.Errorf("redeliver %s: the mark %s says %d bytes were redelivered but the file has %d: it was replaced or cut; move the mark away to start again from the top",
			path, MarkPath(path), from, fi.Size())
	}
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
		if err := writeMark(path, end); err != nil {
			return err
		}
		st.To = end
		return nil
	}
	send := func(b batch) error {
		if len(b.items) == 0 {
			return nil
		}
		if err := out.Send(ctx, b.items); err != nil {
			return fmt.Errorf("redeliver %s through %s: %d entries not sent, the mark stays at byte %d: %w", path, out.Name(), len(b.items), st.To, err)
		}
		if confirmAfter > 0 {
			b.sentAt = time.Now()
			pending = append(pending, b)
			return nil
		}
		st.Sent += len(b.items)
		if opt.Progress != nil {
			opt.Progress(st.Sent)
		}
		return commit(b.end)
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
		var e DeadLetterEntry
		if err := json.Unmarshal(raw, &e); err != nil || (e.Event == nil && e.Raw == "") {
			if err == nil {
				err = errors.New("no event or payload in it")
			}
			lineErr = fmt.Errorf("redeliver %s: line %d after the mark (byte %d) is not a dead-letter entry: %v; nothing from it on was sent: mend or remove that line and run again",
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
	if len(pending) > 0 {
		last := pending[len(pending)-1].sentAt
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("redeliver %s: stopped before the receiver confirmed %d batches; the mark stays at byte %d: %w", path, len(pending), st.To, ctx.Err())
		case <-time.After(time.Until(last.Add(confirmAfter))):
		}
		for _, b := range pending {
			if err := conf.Confirm(b.sentAt); err != nil {
				return st, fmt.Errorf("redeliver %s through %s: the connection that carried %d entries did not last, so they may be lost; the mark stays at byte %d: run again: %w",
					path, out.Name(), len(b.items), st.To, err)
			}
			st.Sent += len(b.items)
			if err := commit(b.end); err != nil {
				return st, err
			}
			if opt.Progress != nil {
				opt.Progress(st.Sent)
			}
		}
	}
	return st, lineErr
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
		it.Payload = []byte(strings.TrimRight(e.Raw, "\n"))
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

func readMark(path string) (int64, error) {
	b, err := os.ReadFile(MarkPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("redeliver: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("redeliver: the mark %s holds %q, not a byte offset", MarkPath(path), bytes.TrimSpace(b))
	}
	return n, nil
}

// writeMark replaces the mark durably: a crash leaves the old or the new
// one, so at most the last batch goes out again.
func writeMark(path string, off int64) error {
	mark := MarkPath(path)
	tmp := mark + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(off, 10)+"\n"), 0o640); err != nil {
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
