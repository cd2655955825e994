package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
)

// version is set by the build (-ldflags "-X main.version=…").
var version = "dev"

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "vmlineage",
		Short: "Trace VM lifecycles and lineage on XenServer / XCP-ng pools",
		Long: `vmlineage follows every VM lifecycle event of a XenServer / XCP-ng pool through XAPI,
turns task pairs into lifecycle records, keeps the VM family tree (who was cloned, copied or
snapshotted from whom) in an embedded store, and answers forensic questions about it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(newAgentCmd(), newSimCmd(), newRecordsCmd(), newTreeCmd(), newAtCmd(), newDemoCmd(), newServeCmd(), newEnrichCmd(), newAlertsCmd(), newConfigCmd(), newVersionCmd(), newSetupCmd(), newOutputsCmd(), newStatusCmd(), newReplayCmd(), newVerifyCmd())
	return root
}

// storeFlags are the flags of the commands that read the store.
type storeFlags struct {
	dataDir string
	config  string
}

func (s *storeFlags) bind(c *cobra.Command) {
	c.Flags().StringVar(&s.dataDir, "data-dir", "", "directory of the lineage store (default: data_dir of --config, else "+config.Default().DataDir+")")
	c.Flags().StringVar(&s.config, "config", "", "agent configuration file to take data_dir from")
}

// load reads --config (defaults without it) with --data-dir applied.
func (s *storeFlags) load() (config.Config, error) {
	cfg := config.Default()
	if s.config != "" {
		var err error
		if cfg, err = config.Load(s.config); err != nil {
			return cfg, err
		}
	}
	if s.dataDir != "" {
		cfg.DataDir = s.dataDir
	}
	return cfg, nil
}

func (s *storeFlags) open() (*lineage.Store, error) {
	cfg, err := s.load()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(cfg.StorePath()); err != nil {
		return nil, fmt.Errorf("no lineage store at %s (is --data-dir right?)", cfg.StorePath())
	}
	return lineage.Open(cfg.StorePath())
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// parseTimeRange reads the --since and --until flags of a listing
// command: a zero time for an empty flag, an error naming the flag.
func parseTimeRange(since, until string) (from, to time.Time, err error) {
	if since != "" {
		if from, err = parseTime(since); err != nil {
			return from, to, fmt.Errorf("--since: %w", err)
		}
	}
	if until != "" {
		if to, err = parseTime(until); err != nil {
			return from, to, fmt.Errorf("--until: %w", err)
		}
	}
	return from, to, nil
}

// parseTime reads the times users type: RFC 3339, or "YYYY-MM-DD[ HH:MM[:SS]]"
// taken as UTC.
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "now" {
		return time.Now().UTC(), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("cannot read time %q (want RFC 3339, e.g. 2024-03-01T09:00:00Z, or 2024-03-01 09:00)", s)
}

func cmdContext(c *cobra.Command) context.Context {
	if ctx := c.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
