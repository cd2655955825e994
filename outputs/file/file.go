// Package file is the JSON-lines file output: one payload per line, size
// based rotation keeping N old files, fsync before Send returns so an
// acknowledged record is on disk.
package file

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmlineage/vmlineage/internal/durable"
	"github.com/vmlineage/vmlineage/outputs"
)

// Config of the file output.
type Config struct {
	Name string // default "file"
	// Path of the live file; rotated files are Path.1 (newest) .. Path.Keep.
	Path string
	// MaxBytes rotates the file once it would grow past this (default 100 MiB;
	// a single line larger than that still goes in, alone).
	MaxBytes int64
	// Keep is how many rotated files to keep (default 5; 0 means the default,
	// negative means none).
	Keep int
	// NoSync skips the fsync per Send (pipelines to a pager, benchmarks).
	NoSync bool
}

// Output writes JSON lines.
type Output struct {
	outputs.Counters
	cfg  Config
	mu   sync.Mutex
	f    *os.File // nil after Close, or after a failed (re)open: Send retries it
	size int64
	// closed by Close; a nil f alone only means the last open failed.
	closed bool
	buf    []byte
}

// New opens (appending to) cfg.Path.
func New(cfg Config) (*Output, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("file output: path is empty")
	}
	if cfg.Name == "" {
		cfg.Name = "file"
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 100 << 20
	}
	if cfg.Keep == 0 {
		cfg.Keep = 5
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
		return nil, fmt.Errorf("file output: %w", err)
	}
	o := &Output{cfg: cfg}
	if err := o.open(); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *Output) open() error {
	f, err := os.OpenFile(o.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("file output: %w", err)
	}
	// The new directory entry (and a rotation's renames) must survive a
	// power loss, or records acknowledged into the file go with it.
	if err := durable.SyncDir(filepath.Dir(o.cfg.Path)); err != nil {
		f.Close()
		return fmt.Errorf("file output %s: fsync of the directory: %w", o.cfg.Path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("file output: %w", err)
	}
	size, err := cutPartialLine(f, st.Size())
	if err != nil {
		f.Close()
		return fmt.Errorf("file output %s: %w", o.cfg.Path, err)
	}
	o.f, o.size = f, size
	return nil
}

// cutPartialLine removes a last line without its newline: a crash in the
// middle of a write leaves one, and its records were not acknowledged, so
// they come again; left in place it would glue onto the next line.
func cutPartialLine(f *os.File, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	rf, err := os.Open(f.Name())
	if err != nil {
		return 0, err
	}
	defer rf.Close()
	buf := make([]byte, 64<<10)
	end := size
	for end > 0 {
		start := max(end-int64(len(buf)), 0)
		n, err := rf.ReadAt(buf[:end-start], start)
		if err != nil && n < int(end-start) {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			cut := start + int64(i) + 1
			if cut == size {
				return size, nil
			}
			return cut, f.Truncate(cut)
		}
		end = start
	}
	return 0, f.Truncate(0)
}

// Name implements outputs.Output.
func (o *Output) Name() string { return o.cfg.Name }

// Line appends payload as one line. JSON never needs a raw CR or LF (inside a
// string they are invalid, outside they are whitespace), so they become
// spaces: a payload can never split into two lines.
func Line(dst, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, payload...)
	if bytes.ContainsAny(payload, "\r\n") {
		for i := start; i < len(dst); i++ {
			if dst[i] == '\n' || dst[i] == '\r' {
				dst[i] = ' '
			}
		}
	}
	return append(dst, '\n')
}

// Send implements outputs.Output.
func (o *Output) Send(ctx context.Context, items []outputs.Item) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return outputs.ErrClosed
	}
	if o.f == nil {
		// The open after a rotation failed (EMFILE, ENOSPC, EACCES...):
		// try again rather than stay down until a restart.
		if err := o.open(); err != nil {
			o.Fail(len(items), err)
			return err
		}
	}
	done := 0
	for done < len(items) {
		o.buf = o.buf[:0]
		n := 0
		for _, it := range items[done:] {
			l := int64(len(o.buf) + len(it.Payload) + 1)
			if n > 0 && o.size+l > o.cfg.MaxBytes {
				break
			}
			o.buf = Line(o.buf, it.Payload)
			n++
		}
		if o.size > 0 && o.size+int64(len(o.buf)) > o.cfg.MaxBytes {
			if err := o.rotate(); err != nil {
				o.Fail(len(items)-done, err)
				return err
			}
			continue
		}
		if _, err := o.f.Write(o.buf); err != nil {
			// Cut a partial write (disk full) so the file stays whole lines.
			if terr := o.f.Truncate(o.size); terr != nil {
				err = fmt.Errorf("%w (cutting the partial line failed: %v)", err, terr)
			}
			err = fmt.Errorf("file output %s: %w", o.cfg.Path, err)
			o.Fail(len(items)-done, err)
			return err
		}
		o.size += int64(len(o.buf))
		done += n
	}
	if !o.cfg.NoSync {
		if err := o.f.Sync(); err != nil {
			err = fmt.Errorf("file output %s: fsync: %w", o.cfg.Path, err)
			o.Fail(len(items), err)
			return err
		}
	}
	o.AddSent(len(items))
	return nil
}

// rotate renames the full file away and opens a new one. A failed rename
// keeps the current file open (the next Send tries again); a failed open
// leaves f nil, and the next Send opens again. The older files move up
// only while Path.1 is taken, so a rename that keeps failing costs no
// rotated file per try, and a live file removed by hand is simply begun
// anew.
func (o *Output) rotate() error {
	if err := o.f.Sync(); err != nil {
		return fmt.Errorf("file output %s: %w", o.cfg.Path, err)
	}
	keep := max(o.cfg.Keep, 0)
	if _, err := os.Lstat(o.cfg.Path); os.IsNotExist(err) {
		keep = -1 // nothing to rename: open a new file
	}
	switch {
	case keep == 0:
		if err := os.Remove(o.cfg.Path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("file output: rotate: %w", err)
		}
	case keep > 0:
		if _, err := os.Lstat(o.cfg.Path + ".1"); err == nil {
			_ = os.Remove(fmt.Sprintf("%s.%d", o.cfg.Path, keep))
			for i := keep - 1; i >= 1; i-- {
				_ = os.Rename(fmt.Sprintf("%s.%d", o.cfg.Path, i), fmt.Sprintf("%s.%d", o.cfg.Path, i+1))
			}
		}
		if err := os.Rename(o.cfg.Path, o.cfg.Path+".1"); err != nil {
			return fmt.Errorf("file output: rotate: %w", err)
		}
	}
	o.f.Close()
	o.f = nil
	return o.open() // fsyncs the directory: the rename and the new file
}

// Close implements outputs.Output.
func (o *Output) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	if o.f == nil {
		return nil
	}
	err := o.f.Close()
	o.f = nil
	return err
}
