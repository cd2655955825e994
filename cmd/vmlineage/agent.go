package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/pipeline"
)

// loadConfig reads --config (when given) over the defaults, then applies
// the flags given on the command line.
func loadConfig(path string, flags *config.Flags) (config.Config, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return cfg, err
		}
	}
	if err := flags.Apply(&cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func newAgentCmd() *cobra.Command {
	var cfgPath string
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent: trace a pool through XAPI into the lineage store",
		Long: `Run the vmlineage agent for one pool. Configuration comes from a YAML file (--config) whose
every key is also a flag (xapi.url is --xapi-url). The XAPI password is read from
--xapi-password-file or from the environment variable named by --xapi-password-env
(default VMLINEAGE_XAPI_PASSWORD), never from the command line.`,
		Args: cobra.NoArgs,
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML configuration file")
	flags := config.BindFlags(c.Flags())
	c.RunE = func(c *cobra.Command, _ []string) error {
		cfg, err := loadConfig(cfgPath, flags)
		if err != nil {
			return err
		}
		log := newLogger(c.ErrOrStderr(), cfg.Log.Level, cfg.Log.Format)
		if cfg.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(cfg.MemoryLimit)
		}
		ctx, stop := signal.NotifyContext(cmdContext(c), os.Interrupt, syscall.SIGTERM)
		defer stop()
		a, err := pipeline.New(cfg, pipeline.Options{Logger: log, Version: version})
		if err != nil {
			return err
		}
		defer a.Close()
		log.Info("vmlineage agent starting", "version", version, "xapi", cfg.XAPI.URL, "store", cfg.StorePath())
		if err := a.Run(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("agent: %w", err)
		}
		ts := a.Tracer.Stats()
		log.Info("vmlineage agent stopped", "events", ts.Events, "batches", ts.Batches, "records", ts.Records, "resyncs", ts.Resyncs,
			"resync_records", ts.ResyncRecords, "reconciled", ts.Reconciled, "commits", ts.Commits)
		return nil
	}
	return c
}
