package logsource

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/xensource"
)

// ReplayConfig configures Replay.
type ReplayConfig struct {
	Files []string // plain or .gz
	// Host names the host whose log the files are; "" takes each line's
	// syslog host field (a collector's file of several hosts).
	Host string
	// HostOf, when set, names the host of each file (wins over Host).
	HostOf func(path string) string
	// Progress is called now and then with the bytes read (compressed
	// bytes for .gz files) and the lines read so far.
	Progress func(bytes, lines int64)
	// Batch is how many records one transaction holds at least (default
	// 5000; checked every 65,536 lines).
	Batch int
	// CacheKiB is the SQLite page cache of the connection the replay
	// writes through (default 16 MiB; the store's connections have 2 MiB):
	// a transaction of thousands of records otherwise spills to the WAL and
	// reads back (README.md, "Store cost").
	CacheKiB int
}

// ReplayResult sums up a replay.
type ReplayResult struct {
	Files   int
	Bytes   int64 // on disk
	Stats   Stats
	Derive  xensource.DeriveStats
	Records int64 // new records stored
}

// SortRotated orders files oldest first: for each log, the highest rotation
// number first (name.3.gz, name.2, name.1, name), other names by name.
func SortRotated(files []string) []string {
	out := append([]string(nil), files...)
	gen := func(p string) (string, int) {
		b := strings.TrimSuffix(p, ".gz")
		if i := strings.LastIndexByte(b, '.'); i > 0 {
			if n, err := strconv.Atoi(b[i+1:]); err == nil {
				return b[:i], n
			}
		}
		return b, 0
	}
	sort.SliceStable(out, func(i, j int) bool {
		bi, gi := gen(out[i])
		bj, gj := gen(out[j])
		if bi != bj {
			return bi < bj
		}
		return gi > gj
	})
	return out
}

// countingReader counts the bytes read from the file (before gunzip).
type countingReader struct {
	r io.Reader
	n *int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// Replay imports old logs into the store through e (which should be in
// Active mode). Files are read oldest first; records are committed in
// batches, and the operations still open at the end are closed.
func Replay(ctx context.Context, e *Engine, cfg ReplayConfig) (ReplayResult, error) {
	var res ReplayResult
	if cfg.Batch <= 0 {
		cfg.Batch = 5000
	}
	if cfg.CacheKiB <= 0 {
		cfg.CacheKiB = 16 << 10
	}
	if e.store != nil {
		b, err := e.store.BeginBulk(ctx, cfg.CacheKiB)
		if err != nil {
			return res, err
		}
		e.mu.Lock()
		e.bulk = b
		e.mu.Unlock()
		defer func() {
			e.mu.Lock()
			e.bulk = nil
			e.mu.Unlock()
			b.Close()
		}()
	}
	storedBefore := e.Stats().Stored
	var read int64
	for _, path := range SortRotated(cfg.Files) {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := replayFile(ctx, e, cfg, path, &read); err != nil {
			return res, fmt.Errorf("%s: %w", path, err)
		}
		res.Files++
	}
	if err := e.Flush(ctx); err != nil {
		return res, err
	}
	if cfg.Progress != nil {
		cfg.Progress(read, e.Stats().Lines)
	}
	res.Bytes = read
	res.Stats = e.Stats()
	res.Derive = e.DeriveStats()
	res.Records = res.Stats.Stored - storedBefore
	return res, nil
}

func replayFile(ctx context.Context, e *Engine, cfg ReplayConfig, path string, read *int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	var r io.Reader = countingReader{f, read}
	if filepath.Ext(path) == ".gz" {
		zr, err := gzipReader(r)
		if err != nil {
			return err
		}
		r = zr
	}
	key := "replay:" + path
	host := cfg.Host
	if cfg.HostOf != nil {
		host = cfg.HostOf(path)
	}
	br := bufio.NewReaderSize(r, e.cfg.MaxLine)
	skipping := false
	var n int64
	e.mu.Lock()
	defer e.mu.Unlock()
	e.years[key] = xensource.NewYearInferer(fi.ModTime(), e.cfg.Loc)
	e.lastYear = nil
	// The clock is read once per chunk of lines below, not per line.
	e.noClock = true
	defer func() { e.noClock = false }()
	e.lastLine = time.Now()
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !skipping {
				e.stats.Overlong++
				e.stats.Lines++
			}
			skipping = true
			continue
		}
		if len(b) > 0 {
			if skipping {
				skipping = false
			} else {
				e.stats.Lines++
				e.stats.Bytes += int64(len(b))
				if b[len(b)-1] == '\n' {
					b = b[:len(b)-1]
				}
				e.feedLine(key, host, b)
			}
		}
		if n++; n&0xffff == 0 {
			e.lastLine = time.Now()
			if len(e.pending) >= cfg.Batch {
				if err := e.commit(ctx, nil); err != nil {
					return err
				}
			}
			if cfg.Progress != nil {
				cfg.Progress(*read, e.stats.Lines)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if err != nil {
			if err == io.EOF {
				return e.commit(ctx, nil)
			}
			return err
		}
	}
}
