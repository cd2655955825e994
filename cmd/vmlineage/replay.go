package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

func newReplayCmd() *cobra.Command {
	var host, dataDir, cfgFile, pool, master, tz string
	var hosts []string
	var noProgress bool
	c := &cobra.Command{
		Use:   "replay [--host NAME] [--data-dir D] [--pool UUID] FILE...",
		Short: "Import old xensource.log files (plain or .gz) into the store",
		Long: `Import old xensource.log files into the lineage store: the lifecycle records they reveal are stored with
the same ids the XAPI tracer gives, so an operation already traced is not stored twice.

Rotated files are read oldest first (xensource.log.3.gz, .2.gz, .1, xensource.log). Without --host each line's
syslog host field names its host (a collector's file of several hosts). Host uuids come from --hosts NAME=UUID
or, failing that, from the hosts the store already knows. A progress bar is drawn on a terminal; otherwise
one summary line is printed.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, files []string) error {
			ctx := cmdContext(c)
			cfg := config.Default()
			if cfgFile != "" {
				var err error
				if cfg, err = config.Load(cfgFile); err != nil {
					return err
				}
			}
			if dataDir != "" {
				cfg.DataDir = dataDir
			}
			var total int64
			for _, f := range files {
				fi, err := os.Stat(f)
				if err != nil {
					return err
				}
				if fi.IsDir() {
					return fmt.Errorf("%s is a directory (give the log files)", f)
				}
				total += fi.Size()
			}
			loc := time.UTC
			if tz != "" {
				var err error
				if loc, err = time.LoadLocation(tz); err != nil {
					return fmt.Errorf("--tz: %w", err)
				}
			}
			st, err := lineage.Open(cfg.StorePath())
			if err != nil {
				return err
			}
			defer st.Close()
			st.OnRefusedParent = func(child, parent string) {
				fmt.Fprintf(c.ErrOrStderr(), "warning: VM %s not made a child of %s, a VM that descends from it (the record keeps the claim)\n", child, parent)
			}
			dcfg, err := replayDeriverConfig(ctx, st, pool, master, hosts)
			if err != nil {
				return err
			}
			e := logsource.NewEngine(st, logsource.EngineConfig{Deriver: dcfg, Loc: loc, Mode: logsource.Active})
			out := c.ErrOrStderr()
			var bar *progressbar.ProgressBar
			start := time.Now()
			if f, ok := out.(*os.File); ok && !noProgress && isatty.IsTerminal(f.Fd()) {
				bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(out), progressbar.OptionShowBytes(true), progressbar.OptionShowTotalBytes(true),
					progressbar.OptionSetPredictTime(true), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionSetDescription("replay"), progressbar.OptionClearOnFinish())
			}
			rc := logsource.ReplayConfig{Files: files, Host: host}
			if bar != nil {
				rc.Progress = func(b, lines int64) {
					rate := float64(lines) / time.Since(start).Seconds()
					bar.Describe(fmt.Sprintf("%d lines, %.0f lines/s", lines, rate))
					_ = bar.Set64(b)
				}
			}
			res, err := logsource.Replay(ctx, e, rc)
			if bar != nil {
				_ = bar.Finish()
			}
			if err != nil {
				return err
			}
			printReplaySummary(c.OutOrStdout(), res, time.Since(start))
			return nil
		},
	}
	c.Flags().StringVar(&host, "host", "", "host whose log the files are (default: each line's syslog host field)")
	c.Flags().StringVar(&dataDir, "data-dir", "", "directory of the lineage store (default: data_dir of --config, else "+config.Default().DataDir+")")
	c.Flags().StringVar(&cfgFile, "config", "", "agent configuration file to take data_dir from")
	c.Flags().StringVar(&pool, "pool", "", "pool uuid (part of every record id; default: the only pool in the store)")
	c.Flags().StringVar(&master, "master", "", "the pool coordinator's host name (for clone/copy/snapshot when its log is not replayed)")
	c.Flags().StringSliceVar(&hosts, "hosts", nil, "host name to uuid, NAME=UUID (repeatable; default: the hosts the store knows)")
	c.Flags().StringVar(&tz, "tz", "", "time zone the hosts logged in (default UTC)")
	c.Flags().BoolVar(&noProgress, "no-progress", false, "never draw a progress bar")
	return c
}

// replayDeriverConfig fills the pool and host map from the flags, else from
// what the store already knows (an agent that traced the pool before).
func replayDeriverConfig(ctx context.Context, st *lineage.Store, pool, master string, hosts []string) (xensource.Config, error) {
	m := map[string]string{}
	for _, h := range hosts {
		name, uuid, ok := strings.Cut(h, "=")
		if !ok || name == "" || uuid == "" {
			return xensource.Config{}, fmt.Errorf("--hosts %q: want NAME=UUID", h)
		}
		m[name] = uuid
	}
	cfg, err := logsource.DeriverConfig(ctx, st, pool, master, m)
	if errors.Is(err, logsource.ErrNoPool) {
		return cfg, errors.New("the store knows no pool: give --pool UUID (it is part of every record id)")
	}
	return cfg, err
}

func printReplaySummary(w io.Writer, res logsource.ReplayResult, d time.Duration) {
	s := res.Stats
	secs := d.Seconds()
	if secs <= 0 {
		secs = 1e-9
	}
	fmt.Fprintf(w, "replayed %d files: %d lines, %.1f MB in %s (%.0f lines/s, %.1f MB/s); %d records stored, %d already known; %d bad lines, %d overlong\n",
		res.Files, s.Lines, float64(res.Bytes)/1e6, d.Round(time.Millisecond), float64(s.Lines)/secs, float64(res.Bytes)/1e6/secs,
		res.Records, s.Known, s.Bad, s.Overlong)
}
