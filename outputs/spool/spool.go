// Package spool is the durable on-disk queue between the tracer and one
// output. Append returns only once the items are on disk (fsynced), so the
// tracer may acknowledge its source (event token, log offset) then; the
// consumer cursor moves only after the output acknowledged delivery. A
// SIGKILL at any moment loses nothing that Append acknowledged; a torn tail
// write is cut off at the next Open.
//
// On disk: segment files seg-<id>.log of frames
//
//	[len uint32 LE][crc32c(body) uint32 LE][body]
//	body = uvarint(len(id)) id varint(unix nanos) payload
//
// and a cursor file (segment id, offset, crc) replaced atomically.
package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmlineage/vmlineage/internal/durable"
	"github.com/vmlineage/vmlineage/outputs"
)

// Policy says what Append does when the spool holds MaxBytes.
type Policy int

const (
	// Block (default) makes Append wait until the output frees space or the
	// caller's context ends: backpressure, the tracer stops reading events and
	// XAPI or the log keeps them. Nothing is lost.
	Block Policy = iota
	// Reject makes Append return ErrFull at once; the caller decides.
	Reject
	// DropOldest deletes the oldest unsent segment to make room and counts
	// the records lost in Stats.Dropped. Only for users who prefer fresh
	// records over complete ones.
	DropOldest
)

// ParsePolicy reads "block", "reject" or "drop-oldest".
func ParsePolicy(s string) (Policy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "block":
		return Block, nil
	case "reject":
		return Reject, nil
	case "drop-oldest", "drop_oldest":
		return DropOldest, nil
	}
	return Block, fmt.Errorf("spool: unknown full policy %q (want block, reject or drop-oldest)", s)
}

func (p Policy) String() string {
	switch p {
	case Reject:
		return "reject"
	case DropOldest:
		return "drop-oldest"
	}
	return "block"
}

// Options tune a spool. Zero values take the defaults.
type Options struct {
	// MaxBytes bounds the bytes on disk (default 1 GiB).
	MaxBytes int64
	// SegmentBytes is the size at which a new segment file starts (default
	// 16 MiB, at most MaxBytes/4 so DropOldest has something to drop).
	SegmentBytes int64
	// SyncInterval is the fsync policy. 0: every Append fsyncs before it
	// returns. >0: group commit; a background fsync runs every SyncInterval
	// and Append waits for the one covering its items, so Append still never
	// returns before its items are on disk but concurrent appenders share
	// one fsync (latency up to SyncInterval).
	SyncInterval time.Duration
	// WhenFull is the policy at MaxBytes (default Block).
	WhenFull Policy
}

// ErrFull is returned by Append under the Reject policy, or under Block when
// the context ends while waiting for space.
var ErrFull = errors.New("spool: full")

// ErrTooBig is returned for a single Append larger than MaxBytes, or
// holding an item whose frame exceeds what a reader accepts (MaxItemBytes).
// Nothing of such an Append is stored; sending it again cannot succeed.
var ErrTooBig = errors.New("spool: items larger than the spool's MaxBytes")

// MaxItemBytes is the largest frame body (id, time and payload encoded) one
// item may take: the reader refuses longer frames as damage.
const MaxItemBytes = maxFrame

// Stats are the spool's counters.
type Stats struct {
	Bytes        int64  `json:"bytes"`         // on disk, unsent included
	Records      int64  `json:"records"`       // not yet acknowledged by the output
	Segments     int    `json:"segments"`      // segment files
	Appended     uint64 `json:"appended"`      // records accepted since Open
	Acked        uint64 `json:"acked"`         // records the output acknowledged since Open
	Dropped      uint64 `json:"dropped"`       // records deleted by DropOldest
	FullWaits    uint64 `json:"full_waits"`    // Appends that waited for space (Block)
	FullRejects  uint64 `json:"full_rejects"`  // Appends refused (Reject, or Block cancelled)
	WriteErrors  uint64 `json:"write_errors"`  // failed writes (disk full, I/O)
	CorruptBytes int64  `json:"corrupt_bytes"` // bytes cut off at Open (torn tail, damage)
}

type pos struct {
	seg uint64
	off int64
}

func (a pos) less(b pos) bool { return a.seg < b.seg || (a.seg == b.seg && a.off < b.off) }

type segment struct {
	id      uint64
	size    int64
	records int64
	// offs of frame starts are not kept; counting uses records only.
}

// Spool is a durable FIFO with one consumer. Append may be called from many
// goroutines; Read and Ack from one.
type Spool struct {
	dir string
	opt Options

	mu     sync.Mutex
	cond   *sync.Cond
	segs   []*segment // ascending id; the last one is written to
	w      *os.File
	synced pos // everything before is on disk
	wpos   pos // end of written data
	rpos   pos // next read
	cpos   pos // committed cursor
	rgen   uint64
	total  int64
	closed bool
	broken error // sticky: the write file is in an unknown state

	pendRecs int64 // records after cpos
	blocked  int   // appenders waiting for space
	stats    Stats

	cf    *os.File // cursor file
	cseq  uint64   // sequence of the last cursor slot written
	rf    *os.File // file of rpos.seg for reading
	rfSeg uint64

	stopSync chan struct{}
	syncDone chan struct{}
}

const (
	frameHeader = 8
	maxFrame    = 64 << 20
	cursorFile  = "cursor"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func segName(id uint64) string { return fmt.Sprintf("seg-%016d.log", id) }

// Open opens or creates the spool in dir, recovering from a crash: a torn or
// damaged tail is cut off (counted in Stats.CorruptBytes) and consumption
// resumes at the committed cursor.
func Open(dir string, opt Options) (*Spool, error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = 1 << 30
	}
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = 16 << 20
	}
	if opt.SegmentBytes > opt.MaxBytes/4 {
		opt.SegmentBytes = max(opt.MaxBytes/4, 4096)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	s := &Spool{dir: dir, opt: opt}
	s.cond = sync.NewCond(&s.mu)
	if err := s.recover(); err != nil {
		return nil, err
	}
	if opt.SyncInterval > 0 {
		s.stopSync = make(chan struct{})
		s.syncDone = make(chan struct{})
		go s.syncLoop()
	}
	return s, nil
}

func (s *Spool) recover() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	var ids []uint64
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, "seg-") || !strings.HasSuffix(n, ".log") {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, "seg-"), ".log"), 10, 64)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	cur, haveCur, err := s.readCursor()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if haveCur && id < cur.seg {
			// Fully consumed before the crash; the delete did not happen.
			_ = os.Remove(filepath.Join(s.dir, segName(id)))
			continue
		}
		seg, err := s.scan(id)
		if err != nil {
			return err
		}
		s.segs = append(s.segs, seg)
	}
	if len(s.segs) == 0 {
		id := uint64(1)
		if haveCur {
			id = cur.seg
		}
		if len(ids) > 0 && ids[len(ids)-1]+1 > id {
			id = ids[len(ids)-1] + 1
		}
		s.segs = append(s.segs, &segment{id: id})
	}
	if !haveCur || cur.seg < s.segs[0].id {
		cur = pos{s.segs[0].id, 0}
	}
	// Count what is still unacknowledged, and clamp a cursor past the data.
	for _, sg := range s.segs {
		s.total += sg.size
		if sg.id > cur.seg {
			s.pendRecs += sg.records
		}
		if sg.id == cur.seg && sg.size > 0 {
			if cur.off > sg.size {
				cur.off = sg.size
			}
			n, err := s.countFrom(sg.id, cur.off)
			if err != nil {
				return err
			}
			s.pendRecs += n
		}
	}
	last := s.segs[len(s.segs)-1]
	f, err := os.OpenFile(filepath.Join(s.dir, segName(last.id)), os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	if _, err := f.Seek(last.size, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("spool %s: %w", s.dir, err)
	}
	s.w = f
	s.wpos = pos{last.id, last.size}
	s.synced = s.wpos
	s.cpos, s.rpos = cur, cur
	return durable.SyncDir(s.dir)
}

// scan validates a segment, truncating it at the first bad frame.
func (s *Spool) scan(id uint64) (*segment, error) {
	path := filepath.Join(s.dir, segName(id))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	seg := &segment{id: id}
	r := &frameReader{f: f, limit: st.Size()}
	for {
		// Decode too: a frame with a valid CRC but a bad body must stop here,
		// not at Read time.
		_, n, err := r.next(&outputs.Item{})
		if err == io.EOF {
			break
		}
		if err != nil {
			// Torn write from a crash (or damage): keep what precedes it.
			s.stats.CorruptBytes += st.Size() - r.off
			if terr := f.Truncate(r.off); terr != nil {
				return nil, fmt.Errorf("spool %s: cutting damaged tail at %d: %w", path, r.off, terr)
			}
			if serr := f.Sync(); serr != nil {
				return nil, fmt.Errorf("spool %s: %w", path, serr)
			}
			break
		}
		_ = n
		seg.records++
	}
	seg.size = r.off
	return seg, nil
}

func (s *Spool) countFrom(id uint64, off int64) (int64, error) {
	f, err := os.Open(filepath.Join(s.dir, segName(id)))
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	r := &frameReader{f: f, off: off, limit: st.Size()}
	var n int64
	for {
		if _, _, err := r.next(&outputs.Item{}); err != nil {
			break
		}
		n++
	}
	return n, nil
}

// frameReader reads frames with pread between off and limit.
type frameReader struct {
	f     *os.File
	off   int64
	limit int64
	hdr   [frameHeader]byte
	buf   []byte
}

var errTorn = errors.New("spool: torn or damaged frame")

// next decodes the frame at r.off into an item (when it != nil) and advances.
func (r *frameReader) next(it *outputs.Item) (outputs.Item, int64, error) {
	if r.off >= r.limit {
		return outputs.Item{}, 0, io.EOF
	}
	if r.limit-r.off < frameHeader {
		return outputs.Item{}, 0, errTorn
	}
	if _, err := r.f.ReadAt(r.hdr[:], r.off); err != nil {
		return outputs.Item{}, 0, errTorn
	}
	n := int64(binary.LittleEndian.Uint32(r.hdr[0:4]))
	sum := binary.LittleEndian.Uint32(r.hdr[4:8])
	if n > maxFrame || r.off+frameHeader+n > r.limit {
		return outputs.Item{}, 0, errTorn
	}
	if int64(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	body := r.buf[:n]
	if _, err := r.f.ReadAt(body, r.off+frameHeader); err != nil {
		return outputs.Item{}, 0, errTorn
	}
	if crc32.Checksum(body, castagnoli) != sum {
		return outputs.Item{}, 0, errTorn
	}
	var out outputs.Item
	if it != nil {
		var err error
		if out, err = decodeBody(body); err != nil {
			return outputs.Item{}, 0, errTorn
		}
	}
	r.off += frameHeader + n
	return out, frameHeader + n, nil
}

func appendFrame(dst []byte, it outputs.Item) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	dst = binary.AppendUvarint(dst, uint64(len(it.ID)))
	dst = append(dst, it.ID...)
	var ns int64
	if !it.Time.IsZero() {
		ns = it.Time.UnixNano()
	}
	dst = binary.AppendVarint(dst, ns)
	dst = append(dst, it.Payload...)
	body := dst[start+frameHeader:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(body, castagnoli))
	return dst
}

// decodeBody copies out of body (the reader reuses its buffer).
func decodeBody(body []byte) (outputs.Item, error) {
	l, n := binary.Uvarint(body)
	if n <= 0 || uint64(len(body)-n) < l {
		return outputs.Item{}, errTorn
	}
	id := string(body[n : n+int(l)])
	rest := body[n+int(l):]
	ns, m := binary.Varint(rest)
	if m <= 0 {
		return outputs.Item{}, errTorn
	}
	it := outputs.Item{ID: id, Payload: append([]byte(nil), rest[m:]...)}
	if ns != 0 {
		it.Time = time.Unix(0, ns).UTC()
	}
	return it, nil
}

// Append stores items durably. It returns nil only when every item is on
// disk; then the caller may acknowledge its source. Under the Block policy
// it waits for space until ctx ends.
func (s *Spool) Append(ctx context.Context, items []outputs.Item) error {
	if len(items) == 0 {
		return nil
	}
	var buf []byte
	for _, it := range items {
		start := len(buf)
		buf = appendFrame(buf, it)
		// Stored, it could never be read back (Read reports damage, Open
		// cuts it as a torn tail), yet Append would have acknowledged it.
		if body := len(buf) - start - frameHeader; body > maxFrame {
			return fmt.Errorf("%w: item %q takes %d bytes, over the %d-byte limit of one item", ErrTooBig, it.ID, body, maxFrame)
		}
	}
	need := int64(len(buf))
	if need > s.opt.MaxBytes {
		return fmt.Errorf("%w (%d > %d bytes)", ErrTooBig, need, s.opt.MaxBytes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer stop()
	waited := false
	for {
		if s.closed {
			return outputs.ErrClosed
		}
		if s.broken != nil {
			return s.broken
		}
		if s.total+need <= s.opt.MaxBytes {
			break
		}
		// Everything delivered, but the write segment's delivered bytes
		// still count: only an Ack rotates them away, and with nothing
		// pending none will come.
		if s.dropConsumedWriteSegLocked() {
			continue
		}
		switch s.opt.WhenFull {
		case Reject:
			s.stats.FullRejects++
			return fmt.Errorf("%w: %d of %d bytes used", ErrFull, s.total, s.opt.MaxBytes)
		case DropOldest:
			if err := s.dropOldestLocked(); err != nil {
				return err
			}
			continue
		}
		if !waited {
			waited = true
			s.stats.FullWaits++
		}
		if err := ctx.Err(); err != nil {
			s.stats.FullRejects++
			return fmt.Errorf("%w: waited for the output to free space: %v", ErrFull, err)
		}
		s.blocked++
		s.cond.Wait()
		s.blocked--
	}
	if s.wpos.off > 0 && s.wpos.off+need > s.opt.SegmentBytes {
		if err := s.rotateLocked(); err != nil {
			return err
		}
	}
	if _, err := s.w.Write(buf); err != nil {
		s.stats.WriteErrors++
		werr := describeWriteErr(s.dir, err)
		// Cut the partial frame so the file stays a clean sequence of frames.
		if terr := s.w.Truncate(s.wpos.off); terr != nil {
			s.broken = fmt.Errorf("%w (and cutting the partial write failed: %v; reopen the spool)", werr, terr)
			return s.broken
		}
		if _, serr := s.w.Seek(s.wpos.off, io.SeekStart); serr != nil {
			s.broken = serr
			return serr
		}
		return werr
	}
	last := s.segs[len(s.segs)-1]
	last.size += need
	last.records += int64(len(items))
	s.total += need
	s.wpos.off += need
	s.pendRecs += int64(len(items))
	s.stats.Appended += uint64(len(items))
	my := s.wpos
	if s.opt.SyncInterval <= 0 {
		return s.syncLocked()
	}
	for s.synced.less(my) {
		if s.closed {
			return outputs.ErrClosed
		}
		if s.broken != nil {
			return s.broken
		}
		// Not cancelled by ctx: the bytes are written, only durability is
		// pending, and the next tick comes within SyncInterval.
		s.cond.Wait()
	}
	return nil
}

func describeWriteErr(dir string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("spool %s: disk full, records not stored (nothing already stored is affected): %w", dir, err)
	}
	if errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("spool %s: disk quota exceeded, records not stored: %w", dir, err)
	}
	return fmt.Errorf("spool %s: write failed, records not stored: %w", dir, err)
}

func (s *Spool) syncLocked() error {
	if !s.synced.less(s.wpos) {
		return nil
	}
	if err := s.w.Sync(); err != nil {
		// After a failed fsync the page cache state is unknown (fsyncgate):
		// refuse further writes until reopened, which rescans the file.
		s.stats.WriteErrors++
		s.broken = fmt.Errorf("spool %s: fsync failed, reopen the spool: %w", s.dir, err)
		s.cond.Broadcast()
		return s.broken
	}
	s.synced = s.wpos
	s.cond.Broadcast()
	return nil
}

func (s *Spool) syncLoop() {
	defer close(s.syncDone)
	t := time.NewTicker(s.opt.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopSync:
			return
		case <-t.C:
			s.mu.Lock()
			if !s.closed && s.broken == nil {
				_ = s.syncLocked()
			}
			s.mu.Unlock()
		}
	}
}

func (s *Spool) rotateLocked() error {
	if err := s.syncLocked(); err != nil {
		return err
	}
	id := s.wpos.seg + 1
	f, err := os.OpenFile(filepath.Join(s.dir, segName(id)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		s.stats.WriteErrors++
		return describeWriteErr(s.dir, err)
	}
	if err := durable.SyncDir(s.dir); err != nil {
		f.Close()
		_ = os.Remove(filepath.Join(s.dir, segName(id)))
		s.stats.WriteErrors++
		return describeWriteErr(s.dir, err)
	}
	s.w.Close()
	s.w = f
	s.segs = append(s.segs, &segment{id: id})
	s.wpos = pos{id, 0}
	s.synced = s.wpos
	return nil
}

// dropOldestLocked deletes the oldest segment, moving the cursor past it.
func (s *Spool) dropOldestLocked() error {
	if len(s.segs) == 1 {
		if s.wpos.off == 0 {
			return fmt.Errorf("%w: nothing to drop", ErrFull)
		}
		if err := s.rotateLocked(); err != nil {
			return err
		}
	}
	old := s.segs[0]
	lost := old.records
	if s.cpos.seg == old.id {
		n, err := s.countFrom(old.id, s.cpos.off)
		if err == nil {
			lost = n
		}
	}
	if err := os.Remove(filepath.Join(s.dir, segName(old.id))); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("spool %s: dropping oldest segment: %w", s.dir, err)
	}
	s.segs = s.segs[1:]
	s.total -= old.size
	s.pendRecs -= lost
	s.stats.Dropped += uint64(lost)
	next := pos{s.segs[0].id, 0}
	if s.cpos.less(next) {
		s.cpos = next
		_ = s.writeCursor(next) // best effort; a stale cursor is clamped at Open
	}
	if s.rpos.less(next) {
		s.rpos = next
		s.rgen++
	}
	return nil
}

// Batch is what Read returns; hand it back to Ack once the output has it.
type Batch struct {
	Items []outputs.Item
	end   pos
	gen   uint64
	n     int64
}

// Read returns up to max items (and about maxBytes of payload; 0 means no
// limit) after the last read, waiting until at least one is on disk or ctx
// ends. Read again without Ack continues after the batch; after a restart
// reading starts at the last Ack.
func (s *Spool) Read(ctx context.Context, max int, maxBytes int) (Batch, error) {
	if max <= 0 {
		max = 1
	}
	s.mu.Lock()
	stop := context.AfterFunc(ctx, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer stop()
	for {
		if s.closed {
			s.mu.Unlock()
			return Batch{}, outputs.ErrClosed
		}
		if err := ctx.Err(); err != nil {
			s.mu.Unlock()
			return Batch{}, err
		}
		// Step over the end of a finished segment.
		if s.rpos.seg < s.wpos.seg {
			if sg := s.segByID(s.rpos.seg); sg == nil || s.rpos.off >= sg.size {
				s.rpos = s.nextSegPos(s.rpos.seg)
				continue
			}
			break
		}
		if s.rpos.less(s.synced) {
			break
		}
		s.cond.Wait()
	}
	from := s.rpos
	limit := s.synced.off
	if from.seg < s.synced.seg {
		limit = s.segByID(from.seg).size
	}
	gen := s.rgen
	if s.rf == nil || s.rfSeg != from.seg {
		if s.rf != nil {
			s.rf.Close()
			s.rf = nil
		}
		f, err := os.Open(filepath.Join(s.dir, segName(from.seg)))
		if err != nil {
			s.mu.Unlock()
			return Batch{}, fmt.Errorf("spool %s: %w", s.dir, err)
		}
		s.rf, s.rfSeg = f, from.seg
	}
	rf := s.rf
	s.mu.Unlock()

	// File I/O outside the lock: appenders keep going meanwhile.
	r := &frameReader{f: rf, off: from.off, limit: limit}
	var b Batch
	size := 0
	for len(b.Items) < max && (maxBytes <= 0 || size < maxBytes) {
		it, _, err := r.next(&outputs.Item{})
		if err == io.EOF {
			break
		}
		if err != nil {
			return Batch{}, fmt.Errorf("spool %s: segment %d damaged at offset %d (written and fsynced, so this is disk damage): %w", s.dir, from.seg, r.off, err)
		}
		size += len(it.Payload)
		b.Items = append(b.Items, it)
	}
	b.end = pos{from.seg, r.off}
	b.gen = gen
	b.n = int64(len(b.Items))

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rgen != gen {
		// DropOldest removed what we read; read again from the new start.
		return Batch{}, nil
	}
	s.rpos = b.end
	return b, nil
}

func (s *Spool) segByID(id uint64) *segment {
	for _, sg := range s.segs {
		if sg.id == id {
			return sg
		}
	}
	return nil
}

func (s *Spool) nextSegPos(id uint64) pos {
	for _, sg := range s.segs {
		if sg.id > id {
			return pos{sg.id, 0}
		}
	}
	return s.wpos
}

// Ack commits the cursor past b: its items are delivered and may be deleted.
// Segments fully behind the cursor are removed, freeing space for Append.
func (s *Spool) Ack(b Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return outputs.ErrClosed
	}
	if b.n == 0 || !s.cpos.less(b.end) {
		// Empty, or behind a cursor that DropOldest moved.
		return nil
	}
	if err := s.writeCursor(b.end); err != nil {
		return err
	}
	s.cpos = b.end
	s.pendRecs -= b.n
	s.stats.Acked += uint64(b.n)
	// Delete finished segments: before the cursor's segment, or the cursor's
	// own once it is full and sealed.
	for len(s.segs) > 1 {
		sg := s.segs[0]
		if sg.id < s.cpos.seg || (sg.id == s.cpos.seg && s.cpos.off >= sg.size) {
			if s.rf != nil && s.rfSeg == sg.id {
				s.rf.Close()
				s.rf = nil
			}
			if err := os.Remove(filepath.Join(s.dir, segName(sg.id))); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("spool %s: %w", s.dir, err)
			}
			s.total -= sg.size
			s.segs = s.segs[1:]
			continue
		}
		break
	}
	// A waiting appender and everything consumed: only the write segment is
	// left, and it is never deleted while written to. Start a new one so it
	// can go, or a large Append could wait for ever.
	if s.blocked > 0 {
		s.dropConsumedWriteSegLocked()
	}
	s.cond.Broadcast()
	return nil
}

// dropConsumedWriteSegLocked starts a new write segment and deletes the old
// one when everything in it is acknowledged (the only segment left), so its
// bytes stop counting against MaxBytes. It reports whether it freed any.
func (s *Spool) dropConsumedWriteSegLocked() bool {
	if len(s.segs) != 1 || s.cpos != s.wpos || s.wpos.off == 0 {
		return false
	}
	old := s.segs[0]
	if err := s.rotateLocked(); err != nil {
		return false
	}
	if s.rf != nil && s.rfSeg == old.id {
		s.rf.Close()
		s.rf = nil
	}
	if err := os.Remove(filepath.Join(s.dir, segName(old.id))); err != nil {
		return false
	}
	s.total -= old.size
	s.segs = s.segs[1:]
	s.cpos, s.rpos = s.wpos, s.wpos
	return true
}

// The cursor file holds two 32-byte slots written alternately in place
// (pwrite + fdatasync, no new blocks, so it works on a full disk):
// [seq u64][seg u64][off u64][crc32c u32][pad]. The valid slot with the
// higher seq wins; a torn slot leaves the other one.
const slotSize = 32

func (s *Spool) readCursor() (pos, bool, error) {
	path := filepath.Join(s.dir, cursorFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return pos{}, false, fmt.Errorf("spool %s: cursor: %w", s.dir, err)
	}
	b := make([]byte, 2*slotSize)
	n, _ := f.ReadAt(b, 0)
	if n < len(b) {
		// New (or short) file: allocate both slots now, while there is room.
		if _, err := f.WriteAt(make([]byte, 2*slotSize-n), int64(n)); err != nil {
			f.Close()
			return pos{}, false, fmt.Errorf("spool %s: cursor: %w", s.dir, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return pos{}, false, fmt.Errorf("spool %s: cursor: %w", s.dir, err)
		}
	}
	s.cf = f
	var best pos
	found := false
	for i := 0; i < 2; i++ {
		sl := b[i*slotSize : (i+1)*slotSize]
		if crc32.Checksum(sl[:24], castagnoli) != binary.LittleEndian.Uint32(sl[24:28]) {
			continue
		}
		seq := binary.LittleEndian.Uint64(sl[0:8])
		if seq == 0 || (found && seq < s.cseq) {
			continue
		}
		s.cseq, found = seq, true
		best = pos{binary.LittleEndian.Uint64(sl[8:16]), int64(binary.LittleEndian.Uint64(sl[16:24]))}
	}
	return best, found, nil
}

func (s *Spool) writeCursor(p pos) error {
	var b [slotSize]byte
	seq := s.cseq + 1
	binary.LittleEndian.PutUint64(b[0:8], seq)
	binary.LittleEndian.PutUint64(b[8:16], p.seg)
	binary.LittleEndian.PutUint64(b[16:24], uint64(p.off))
	binary.LittleEndian.PutUint32(b[24:28], crc32.Checksum(b[:24], castagnoli))
	if _, err := s.cf.WriteAt(b[:], int64(seq%2)*slotSize); err != nil {
		return fmt.Errorf("spool %s: cursor: %w", s.dir, err)
	}
	if err := syscall.Fdatasync(int(s.cf.Fd())); err != nil {
		return fmt.Errorf("spool %s: cursor: %w", s.dir, err)
	}
	s.cseq = seq
	return nil
}

// Stats returns the counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Bytes = s.total
	st.Records = s.pendRecs
	st.Segments = len(s.segs)
	return st
}

// Rewind makes the next Read start again at the last Ack: everything read
// since is read again (the output may have lost it; see
// outputs.Confirmer). Call it from the reader, between Reads.
func (s *Spool) Rewind() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rpos = s.cpos
}

// Dir is the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// MaxAppend is the most bytes (FrameSize) one Append should carry: one
// segment, a quarter of MaxBytes at most. Append refuses more than MaxBytes
// (ErrTooBig), and an Append near MaxBytes under the Block policy would wait
// until the output had delivered everything before it.
func (s *Spool) MaxAppend() int64 { return s.opt.SegmentBytes }

// FrameSize bounds the bytes it takes in the spool (what MaxBytes counts).
func FrameSize(it outputs.Item) int64 {
	return int64(frameHeader + 2*binary.MaxVarintLen64 + len(it.ID) + len(it.Payload))
}

// Close syncs and closes; waiting Appends and Reads return ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	var err error
	if s.broken == nil {
		err = s.syncLocked()
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	if s.stopSync != nil {
		close(s.stopSync)
		<-s.syncDone
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rf != nil {
		s.rf.Close()
	}
	s.cf.Close()
	if cerr := s.w.Close(); err == nil {
		err = cerr
	}
	return err
}
