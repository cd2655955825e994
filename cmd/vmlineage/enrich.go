package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/alerts"
	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/plugins"
)

// defaultPluginDir is where the packages install the shipped detectors.
const defaultPluginDir = "/usr/lib/vmlineage/detectors"

// detectorFlags are the flags of the commands that run detector plugins.
type detectorFlags struct {
	dir         string
	pins        []string
	pinsFile    string
	only        []string
	set         []string
	window      time.Duration
	k           int
	callTimeout time.Duration
	logLevel    string
	backend     string
}

func (d *detectorFlags) bind(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&d.dir, "plugin-dir", defaultPluginDir, "directory of detector plugin binaries")
	f.StringArrayVar(&d.pins, "pin", nil, "name=sha256 of a detector binary (repeatable); unpinned detectors are refused")
	f.StringVar(&d.pinsFile, "pins-file", "", `sha256sum-style file of detector pins (default: <plugin-dir>/SHA256SUMS when present)`)
	f.StringSliceVar(&d.only, "detectors", nil, "run only these detectors (comma-separated names)")
	f.StringArrayVar(&d.set, "set", nil, "detector setting name.key=value (repeatable), e.g. rollback.old=48h")
	f.DurationVar(&d.window, "window", 24*time.Hour, "lineage-suspects: time window in which alerts of one family count together")
	f.IntVar(&d.k, "k", 2, "lineage-suspects: VMs of one family that must alert within the window")
	f.DurationVar(&d.callTimeout, "call-timeout", 2*time.Second, "bound of every call to a detector")
	f.StringVar(&d.logLevel, "log-level", "info", "debug, info, warn or error (logs go to stderr)")
	f.StringVar(&d.backend, "lineage-backend", "", "where lineage is read: store (the lineage store in --data-dir) or elasticsearch (the VM documents behind the elasticsearch output of --config, every pool's); default: lineage.backend of --config, else store")
}

func (d *detectorFlags) config() (plugins.Config, error) {
	cfg := plugins.Config{Dir: d.dir, Pins: map[string]string{}, Settings: map[string]map[string]string{}, Only: d.only, CallTimeout: d.callTimeout}
	pinsFile := d.pinsFile
	if pinsFile == "" {
		if p := filepath.Join(d.dir, "SHA256SUMS"); fileExists(p) {
			pinsFile = p
		}
	}
	if pinsFile != "" {
		pins, err := plugins.ReadPins(pinsFile)
		if err != nil {
			return cfg, fmt.Errorf("--pins-file: %w", err)
		}
		cfg.Pins = pins
	}
	for _, p := range d.pins {
		name, sum, ok := strings.Cut(p, "=")
		if !ok || name == "" || sum == "" {
			return cfg, fmt.Errorf("--pin %q: want name=sha256", p)
		}
		cfg.Pins[name] = sum
	}
	if d.k < 1 {
		return cfg, fmt.Errorf("--k %d: want at least 1", d.k)
	}
	if d.window <= 0 {
		return cfg, fmt.Errorf("--window %s: want a positive duration", d.window)
	}
	cfg.Settings["lineage-suspects"] = map[string]string{"k": fmt.Sprint(d.k), "window": d.window.String()}
	for _, s := range d.set {
		key, val, ok := strings.Cut(s, "=")
		name, k, ok2 := strings.Cut(key, ".")
		if !ok || !ok2 || name == "" || k == "" {
			return cfg, fmt.Errorf("--set %q: want detector.key=value", s)
		}
		if cfg.Settings[name] == nil {
			cfg.Settings[name] = map[string]string{}
		}
		cfg.Settings[name][k] = val
	}
	return cfg, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// start opens the lineage backend and the alert log and starts the
// detectors found in the plugin directory (none when it does not exist).
// With the store backend the store in --data-dir must exist; the alert log
// is kept beside it (alerts.db) in either case.
func (d *detectorFlags) start(ctx context.Context, c *cobra.Command, sf *storeFlags) (*alerts.Enricher, func(), error) {
	log := newLogger(c.ErrOrStderr(), d.logLevel, "text")
	acfg, err := sf.load()
	if err != nil {
		return nil, nil, err
	}
	if d.backend != "" {
		acfg.Lineage.Backend = d.backend
	}
	if err := acfg.Validate(); err != nil {
		return nil, nil, err
	}
	var st *lineage.Store
	closeStore := func() {}
	if acfg.Lineage.Backend == config.LineageStore {
		if st, err = sf.open(); err != nil {
			return nil, nil, err
		}
		closeStore = func() { st.Close() }
	}
	lin, err := pipeline.OpenLineage(acfg, st)
	if err != nil {
		closeStore()
		return nil, nil, err
	}
	closeLin := func() { lin.Close(); closeStore() }
	svc, err := alerts.NewServiceWith(ctx, lin, alerts.AlertsPath(acfg.StorePath()), log)
	if err != nil {
		closeLin()
		return nil, nil, err
	}
	svc.SetRetention(alerts.Retention{MaxAge: acfg.Alerts.Retention.D(), MaxAlerts: acfg.Alerts.MaxAlerts})
	cfg, err := d.config()
	if err != nil {
		svc.Close()
		closeLin()
		return nil, nil, err
	}
	cfg.Logger = log
	if !fileExists(cfg.Dir) {
		log.Warn("no detector plugin directory; alerts are matched to VMs but not enriched with suspects", "plugin_dir", cfg.Dir)
		cfg.Dir = ""
	}
	m, err := plugins.NewManager(cfg, svc)
	if err != nil {
		svc.Close()
		closeLin()
		return nil, nil, err
	}
	m.Start(ctx)
	for _, s := range m.Status() {
		if s.State != plugins.StateRunning {
			log.Error("detector not running", "detector", s.Name, "state", s.State, "error", s.LastError)
		}
	}
	e := alerts.NewEnricher(svc, m, log)
	e.Window = d.window
	restoreGC := alerts.TuneGC() // fewer collections for latency (see alerts.GCHeadroom)
	return e, func() { m.Close(); svc.Close(); closeLin(); restoreGC() }, nil
}

func newEnrichCmd() *cobra.Command {
	var sf storeFlags
	var df detectorFlags
	c := &cobra.Command{
		Use:   "enrich",
		Short: "Enrich security alerts (JSON lines on stdin) with lineage suspects",
		Long: `Read ECS JSON alerts, one per line, from stdin; tie each to the VMs it names
(cloud.instance.id, host.name, host.ip, source.ip, destination.ip, host.mac) as they were at
the alert's @timestamp; ask the detector plugins; and write each alert enriched (threat.enrichments,
vmlineage.suspects, vmlineage.common_ancestor, vmlineage.findings, vmlineage.notes) as one JSON
line on stdout, in input order. A line that is not an alert is replaced by an error document
(vmlineage.error, event.original) and reported on stderr; nothing is dropped. Alerts are stored
in the alert log beside the lineage store (alerts.db), so alerts of earlier runs count towards
--k within --window. Lineage is read from the store, or with --lineage-backend elasticsearch
(lineage.backend in --config) from the VM documents the Elasticsearch output writes.

Detector binaries are taken from --plugin-dir and must be pinned by SHA-256 (--pin name=sum or
a SHA256SUMS file in the directory).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := cmdContext(c)
			e, stop, err := df.start(ctx, c, &sf)
			if err != nil {
				return err
			}
			defer stop()
			nerr := 0
			err = alerts.RunJSONLines(ctx, c.InOrStdin(), c.OutOrStdout(), e, func(line int, err error) {
				nerr++
				fmt.Fprintf(c.ErrOrStderr(), "vmlineage enrich: %v\n", err)
			})
			if err != nil {
				return err
			}
			if nerr > 0 {
				fmt.Fprintf(c.ErrOrStderr(), "vmlineage enrich: %d lines were not alerts (error documents written in their place)\n", nerr)
			}
			return nil
		},
	}
	sf.bind(c)
	df.bind(c)
	return c
}
