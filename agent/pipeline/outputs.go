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
	Name    string
	cfg     config.Output
	out     outputs.Output
	spool   *spool.Spool
	shipper *spool.Shipper
	encode  func(dst []byte, r *record.Record, c *formats.Context) []byte
}

// cef reports whether the output carries CEF (else ECS JSON).
func (o *Output) cef() bool {
	return !(o.cfg.Type == "elasticsearch" || o.cfg.Format == "ecs" || (o.cfg.Format == "" && o.cfg.Type != "syslog"))
}

// Raw is the output itself, without spool (setup, outputs test).
func Raw(o *Output) outputs.Output { return o.out }

// Health reports the output's counters and spool.
func (o *Output) Health() spool.ShipperHealth { return o.shipper.Health() }

// cursorKey is the agent_state key of an output's position in the store.
func cursorKey(name string) string { return "output." + name + ".seq" }

// NewOutput builds the output a configuration names (no I/O beyond opening
// files and its spool).
func NewOutput(c config.Output, dataDir string) (*Output, error) {
	o := &Output{Name: c.Name, cfg: c}
	var err error
	if o.out, err = buildOutput(c, dataDir); err != nil {
		return nil, fmt.Errorf("output %s: %w", c.Name, err)
	}
	o.encode = ecs.AppendRecord
	if o.cef() {
		o.encode = cef.AppendRecord
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
			DeadLetterPath: filepath.Join(dataDir, "deadletter", c.Name+".jsonl")})
	case "file":
		return file.New(file.Config{Name: c.Name, Path: c.Path, MaxBytes: c.MaxBytes, Keep: c.Keep})
	case "stdout":
		return stdout.New(os.Stdout), nil
	}
	return nil, fmt.Errorf("unknown type %q", c.Type)
}

// feed moves records from the store into the output's spool, from the
// output's cursor on, until ctx ends. wake is signalled when the tracer
// commits records.
func (o *Output) feed(ctx context.Context, st *lineage.Store, cb *contextBuilder, wake <-chan struct{}, log *slog.Logger) {
	key := cursorKey(o.Name)
	var cursor int64
	if v, err := st.AgentState(ctx, key); err == nil && v != "" {
		fmt.Sscan(v, &cursor)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var buf []byte
	for ctx.Err() == nil {
		recs, err := st.RecordsAfter(ctx, cursor, 500)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("output: reading the store failed", "output", o.Name, "err", err)
			}
		}
		if len(recs) == 0 || err != nil {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-tick.C:
			}
			continue
		}
		items := make([]outputs.Item, 0, len(recs))
		for i := range recs {
			r := &recs[i].Record
			c := cb.build(ctx, r, o.cfg.Namespace)
			buf = o.encode(buf[:0], r, c)
			items = append(items, outputs.Item{ID: r.ID, Payload: append([]byte(nil), buf...), Time: r.End})
		}
		if err := o.spool.Append(ctx, items); err != nil {
			if ctx.Err() == nil {
				log.Error("output: spool refused records; retrying", "output", o.Name, "err", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		last := recs[len(recs)-1].Seq
		if err := st.Update(ctx, func(tx *lineage.Tx) error { return tx.SetAgentState(key, fmt.Sprint(last)) }); err != nil {
			// The spool holds them; a restart re-appends at most this batch.
			log.Warn("output: saving the cursor failed", "output", o.Name, "err", err)
		}
		cursor = last
	}
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
	return errors.Join(o.spool.Close(), o.out.Close())
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
