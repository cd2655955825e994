package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats"
	"github.com/vmlineage/vmlineage/formats/cef"
	"github.com/vmlineage/vmlineage/formats/ecs"
	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/outputs/elasticsearch"
	"github.com/vmlineage/vmlineage/outputs/file"
	"github.com/vmlineage/vmlineage/outputs/spool"
	"github.com/vmlineage/vmlineage/outputs/stdout"
	"github.com/vmlineage/vmlineage/outputs/syslog"
	"github.com/vmlineage/vmlineage/packaging/kibana"
)

// Delivery path of a record: the tracer commits it to the lineage store
// (with the event token, in one transaction); a feeder per output reads the
// store from that output's cursor, encodes, appends to the output's durable
// spool, and only then moves the cursor (kept in the store); a shipper sends
// from the spool and acknowledges what the receiver took. Every step is
// durable before the previous one forgets: a SIGKILL anywhere repeats at
// most the last batch (Elasticsearch drops the repeat by _id) and loses
// nothing.

// Output is one configured destination, running.
type Output struct {
	Name       string
	cfg        config.Output
	out        outputs.Output
	spool      *spool.Spool
	shipper    *spool.Shipper
	encode     func(dst []byte, r *record.Record, c *formats.Context) []byte
	checkpoint func(dst []byte, cp *formats.Checkpoint, c *formats.Context) []byte
	fed        atomic.Int64 // chain seq of the last record in the spool
	// TooBig counts records the spool can never take (spool.ErrTooBig for
	// the record alone): written to the dead-letter file, not fed.
	TooBig atomic.Uint64
	dlPath string
	dl     *outputs.DeadLetter // opened at the first record too big
}

// cef reports whether the output carries CEF (else ECS JSON).
func (o *Output) cef() bool {
	if o.cfg.Type == "elasticsearch" {
		return false
	}
	return o.cfg.Format == "cef" || (o.cfg.Format == "" && o.cfg.Type == "syslog")
}

// AppendJSON writes r as `vmlineage records --format json` does, with its
// chain link: the form `vmlineage verify --file` checks.
func AppendJSON(dst []byte, r *record.Record, _ *formats.Context) []byte {
	b, err := json.Marshal(r)
	if err != nil { // a Record always marshals; keep the line whole anyway
		return append(dst, "{}"...)
	}
	return append(dst, b...)
}

// CheckpointJSON is a checkpoint line in the json format.
type CheckpointJSON struct {
	Checkpoint struct {
		Seq      int64  `json:"seq"`
		Hash     string `json:"hash"`
		At       string `json:"at"`
		Reason   string `json:"reason,omitempty"`
		PoolUUID string `json:"pool_uuid,omitempty"`
	} `json:"checkpoint"`
}

// AppendCheckpointJSON writes a checkpoint in the json format.
func AppendCheckpointJSON(dst []byte, cp *formats.Checkpoint, _ *formats.Context) []byte {
	var c CheckpointJSON
	c.Checkpoint.Seq, c.Checkpoint.Hash, c.Checkpoint.At = cp.Seq, cp.Hash, record.FormatTime(cp.At)
	c.Checkpoint.Reason, c.Checkpoint.PoolUUID = cp.Reason, cp.PoolUUID
	b, _ := json.Marshal(c)
	return append(dst, b...)
}

// Raw is the output itself, without spool (setup, outputs test).
func Raw(o *Output) outputs.Output { return o.out }

// Health reports the output's counters and spool.
func (o *Output) Health() spool.ShipperHealth { return o.shipper.Health() }

// cursorKey is the agent_state key of an output's position in the store's
// hash chain (the chain seq of the last record it took), checkpointKey the
// id of the last checkpoint it took.
func cursorKey(name string) string     { return "output." + name + ".chain" }
func checkpointKey(name string) string { return "output." + name + ".checkpoint" }

// NewOutput builds the output a configuration names (no I/O beyond opening
// files and its spool).
func NewOutput(c config.Output, dataDir string) (*Output, error) {
	o := &Output{Name: c.Name, cfg: c, dlPath: DeadLetterPath(c, dataDir)}
	var err error
	if o.out, err = buildOutput(c, dataDir); err != nil {
		return nil, fmt.Errorf("output %s: %w", c.Name, err)
	}
	o.encode, o.checkpoint = ecs.AppendRecord, ecs.AppendCheckpoint
	switch {
	case o.cef():
		o.encode, o.checkpoint = cef.AppendRecord, cef.AppendCheckpoint
	case c.Format == "json" && c.Type != "elasticsearch":
		o.encode, o.checkpoint = AppendJSON, AppendCheckpointJSON
	}
	pol := spool.Block
	switch c.WhenFull {
	case "reject":
		pol = spool.Reject
	case "drop-oldest":
		pol = spool.DropOldest
	}
	o.spool, err = spool.Open(filepath.Join(dataDir, "spool", c.Name), spool.Options{MaxBytes: c.SpoolMaxBytes, WhenFull: pol, SyncInterval: 10 * time.Millisecond})
	if err != nil {
		o.out.Close()
		return nil, fmt.Errorf("output %s: spool: %w", c.Name, err)
	}
	o.shipper = &spool.Shipper{Spool: o.spool, Output: o.out}
	return o, nil
}

func readSecret(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), nil
}

// BuildOutput builds only the output a configuration names, without its
// spool: for commands that send beside a running agent (its spool is the
// agent's). Items the output gives up on go to the same dead-letter file.
func BuildOutput(c config.Output, dataDir string) (outputs.Output, error) {
	out, err := buildOutput(c, dataDir)
	if err != nil {
		return nil, fmt.Errorf("output %s: %w", c.Name, err)
	}
	return out, nil
}

// DeadLetterPath is where the output a configuration names writes what it
// gives up on.
func DeadLetterPath(c config.Output, dataDir string) string {
	return filepath.Join(dataDir, "deadletter", c.Name+".jsonl")
}

func buildOutput(c config.Output, dataDir string) (outputs.Output, error) {
	switch c.Type {
	case "syslog":
		sc := syslog.Config{Name: c.Name, Network: c.Network, Address: c.Address,
			TLS: syslog.TLSConfig{CAFile: c.CAFile, Fingerprint: c.Fingerprint, CertFile: c.CertFile, KeyFile: c.KeyFile}}
		if sc.Network == "" {
			sc.Network = "tcp"
		}
		sc.FormatConfig.Format = syslog.RFC5424
		if c.Framing == "rfc3164" {
			sc.FormatConfig.Format = syslog.RFC3164
		}
		sc.FormatConfig.AppName, sc.FormatConfig.Tag = c.Tag, c.Tag
		return syslog.New(sc)
	case "elasticsearch":
		pw, err := readSecret(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		key, err := readSecret(c.APIKeyFile)
		if err != nil {
			return nil, fmt.Errorf("api_key_file: %w", err)
		}
		return elasticsearch.New(elasticsearch.Config{Name: c.Name, URLs: c.URLs, Username: c.Username, Password: pw, APIKey: key,
			CAFile: c.CAFile, Fingerprint: c.Fingerprint, Namespace: c.Namespace, KibanaURL: c.KibanaURL, SavedObjects: kibana.NDJSON,
			DeadLetterPath: DeadLetterPath(c, dataDir)}) // the feeder's dead letters go there too
	case "file":
		return file.New(file.Config{Name: c.Name, Path: c.Path, MaxBytes: c.MaxBytes, Keep: c.Keep})
	case "stdout":
		return stdout.New(os.Stdout), nil
	}
	return nil, fmt.Errorf("unknown type %q", c.Type)
}

// feed moves sealed records, in chain order, and the chain checkpoints
// from the store into the output's spool, from the output's cursors on,
// until ctx ends. wake is signalled when records are sealed.
func (o *Output) feed(ctx context.Context, st *lineage.Store, cb *contextBuilder, wake <-chan struct{}, log *slog.Logger) {
	key, ckey := cursorKey(o.Name), checkpointKey(o.Name)
	var cursor, ckCursor int64
	if v, err := st.AgentState(ctx, key); err == nil && v != "" {
		fmt.Sscan(v, &cursor)
	}
	if v, err := st.AgentState(ctx, ckey); err == nil && v != "" {
		fmt.Sscan(v, &ckCursor)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var buf []byte
	for ctx.Err() == nil {
		recs, err := st.Sealed(ctx, cursor, 500)
		var cps []lineage.Checkpoint
		if err == nil {
			last := cursor
			if len(recs) > 0 {
				last = recs[len(recs)-1].Chain.Seq
			}
			cps, err = st.Checkpoints(ctx, ckCursor, last)
		}
		if err != nil && ctx.Err() == nil {
			log.Error("output: reading the store failed", "output", o.Name, "err", err)
		}
		if (len(recs) == 0 && len(cps) == 0) || err != nil {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-tick.C:
			}
			continue
		}
		// Each item remembers the cursors it moves to, so that the batch
		// can go into the spool in pieces the spool takes (a batch may
		// exceed a small spool_max_bytes), each piece with its cursors.
		items := make([]outputs.Item, 0, len(recs)+len(cps))
		marks := make([][2]int64, 0, len(recs)+len(cps))
		addCheckpoints := func(upTo int64) {
			for len(cps) > 0 && cps[0].Seq <= upTo {
				cp := cps[0]
				cps = cps[1:]
				f := formats.Checkpoint{Seq: cp.Seq, Hash: cp.Hash, At: cp.At, Reason: cp.Reason, PoolUUID: cb.pool(ctx)}
				buf = o.checkpoint(buf[:0], &f, cb.base(ctx, o.cfg.Namespace))
				items = append(items, outputs.Item{ID: formats.CheckpointID(&f), Payload: append([]byte(nil), buf...), Time: cp.At})
				ckCursor = cp.ID
				marks = append(marks, [2]int64{cursor, ckCursor})
			}
		}
		for i := range recs {
			r := &recs[i]
			addCheckpoints(r.Chain.Seq - 1)
			c := cb.build(ctx, r, o.cfg.Namespace)
			buf = o.encode(buf[:0], r, c)
			items = append(items, outputs.Item{ID: r.ID, Payload: append([]byte(nil), buf...), Time: r.End})
			cursor = r.Chain.Seq
			marks = append(marks, [2]int64{cursor, ckCursor})
		}
		addCheckpoints(cursor)
		if err := o.appendInPieces(ctx, st, key, ckey, items, marks, log); err != nil {
			if ctx.Err() == nil {
				log.Error("output: spool refused records; retrying", "output", o.Name, "err", err)
				sleepCtx(ctx, time.Second)
			}
			// Re-read from the saved cursors.
			if v, err := st.AgentState(ctx, key); err == nil {
				cursor = 0
				fmt.Sscan(v, &cursor)
			}
			if v, err := st.AgentState(ctx, ckey); err == nil {
				ckCursor = 0
				fmt.Sscan(v, &ckCursor)
			}
			continue
		}
	}
}

// appendInPieces appends items to the spool in pieces of at most
// spool.MaxAppend bytes, saving after each piece the cursors its last item
// moved to (marks[i] for items[i]): a restart re-appends at most one piece.
func (o *Output) appendInPieces(ctx context.Context, st *lineage.Store, key, ckey string, items []outputs.Item, marks [][2]int64, log *slog.Logger) error {
	limit := o.spool.MaxAppend()
	for len(items) > 0 {
		n, size := 0, int64(0)
		for n < len(items) {
			f := spool.FrameSize(items[n])
			if n > 0 && size+f > limit {
				break
			}
			size += f
			n++
		}
		if err := o.spool.Append(ctx, items[:n]); err != nil {
			if !errors.Is(err, spool.ErrTooBig) {
				return err
			}
			if n > 1 {
				limit = 0 // one item at a time, to find the one too big
				continue
			}
			// Alone too big for the spool: retrying cannot help, and would
			// stop this output's feed for good. Dead-letter it and go on.
			if derr := o.deadLetterTooBig(items[0], err, log); derr != nil {
				return derr
			}
			limit = o.spool.MaxAppend()
		}
		c, k := marks[n-1][0], marks[n-1][1]
		if err := st.Update(ctx, func(tx *lineage.Tx) error {
			if err := tx.SetAgentState(key, fmt.Sprint(c)); err != nil {
				return err
			}
			return tx.SetAgentState(ckey, fmt.Sprint(k))
		}); err != nil {
			// The spool holds them; a restart re-appends at most this piece.
			log.Warn("output: saving the cursor failed", "output", o.Name, "err", err)
		}
		o.fed.Store(c)
		items, marks = items[n:], marks[n:]
	}
	return nil
}

// deadLetterTooBig writes a record the spool refused as too big to the
// output's dead-letter file (fsynced: only then may the cursor pass it).
func (o *Output) deadLetterTooBig(it outputs.Item, err error, log *slog.Logger) error {
	if o.dl == nil {
		dl, derr := outputs.OpenDeadLetter(o.dlPath)
		if derr != nil {
			return fmt.Errorf("%w (dead-lettering it failed: %v)", err, derr)
		}
		o.dl = dl
	}
	if derr := o.dl.Write([]outputs.DeadLetterEntry{outputs.Entry(o.Name, it, 413, err.Error())}); derr != nil {
		return fmt.Errorf("%w (dead-lettering it failed: %v)", err, derr)
	}
	o.TooBig.Add(1)
	log.Error("output: record too big for the spool, written to the dead-letter file", "output", o.Name, "id", it.ID, "bytes", len(it.Payload), "deadletter", o.dlPath, "err", err)
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Close flushes nothing (everything is on disk) and closes files.
func (o *Output) Close() error {
	var dlErr error
	if o.dl != nil {
		dlErr = o.dl.Close()
	}
	return errors.Join(o.spool.Close(), o.out.Close(), dlErr)
}

// outputSet runs every output.
type outputSet struct {
	list []*Output
	wake []chan struct{}
	wg   sync.WaitGroup
}

func startOutputs(ctx context.Context, cfg config.Config, st *lineage.Store, log *slog.Logger, agentVersion string) (*outputSet, error) {
	set := &outputSet{}
	cb := newContextBuilder(st, agentVersion)
	for _, c := range cfg.Outputs {
		o, err := NewOutput(c, cfg.DataDir)
		if err != nil {
			set.close()
			return nil, err
		}
		wake := make(chan struct{}, 1)
		set.list, set.wake = append(set.list, o), append(set.wake, wake)
		set.wg.Add(2)
		go func() {
			defer set.wg.Done()
			if err := o.shipper.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("output: shipper stopped", "output", o.Name, "err", err)
			}
		}()
		go func() {
			defer set.wg.Done()
			o.feed(ctx, st, cb, wake, log)
		}()
	}
	set.wg.Add(1)
	go func() {
		defer set.wg.Done()
		set.saveHealth(ctx, st, log)
	}()
	return set, nil
}

// saveHealth writes every output's counters into the store every few
// seconds, where `vmlineage status` reads them.
func (s *outputSet) saveHealth(ctx context.Context, st *lineage.Store, log *slog.Logger) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		var hs []spool.ShipperHealth
		for _, o := range s.list {
			hs = append(hs, o.Health())
		}
		if js, err := json.Marshal(hs); err == nil {
			if err := st.Update(context.WithoutCancel(ctx), func(tx *lineage.Tx) error { return tx.SetAgentState("outputs.health", string(js)) }); err != nil && ctx.Err() == nil {
				log.Debug("saving output health failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// notify wakes the feeders after a commit.
func (s *outputSet) notify() {
	if s == nil {
		return
	}
	for _, w := range s.wake {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

func (s *outputSet) close() error {
	if s == nil {
		return nil
	}
	s.wg.Wait()
	var errs []error
	for _, o := range s.list {
		errs = append(errs, o.Close())
	}
	return errors.Join(errs...)
}
