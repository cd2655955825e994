package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats/cef"
	"github.com/vmlineage/vmlineage/formats/ecs"
	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/outputs/elasticsearch"
)

func newSetupCmd() *cobra.Command {
	var cfgPath string
	c := &cobra.Command{
		Use:   "setup",
		Short: "Install the Elasticsearch index templates, ILM policy and Kibana dashboards",
		Long: `For every elasticsearch output of the configuration: install the ILM policy, the index template
of the data stream logs-vmlineage.lifecycle-* (priority above the built-in logs template), the VM
index template, and, when kibana_url is set, the Kibana data view and dashboards (saved objects import).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			n := 0
			for _, o := range cfg.Outputs {
				if o.Type != "elasticsearch" {
					continue
				}
				n++
				out, err := pipeline.NewOutput(o, cfg.DataDir)
				if err != nil {
					return err
				}
				es, ok := pipeline.Raw(out).(*elasticsearch.Output)
				if !ok {
					out.Close()
					return fmt.Errorf("output %s is not elasticsearch", o.Name)
				}
				ctx, cancel := context.WithTimeout(cmdContext(c), 2*time.Minute)
				steps, err := es.Setup(ctx)
				cancel()
				out.Close()
				for _, s := range steps {
					fmt.Fprintf(c.OutOrStdout(), "%s: %s: HTTP %d %s\n", o.Name, s.What, s.Status, s.Err)
				}
				if err != nil {
					return fmt.Errorf("output %s: %w", o.Name, err)
				}
			}
			if n == 0 {
				return fmt.Errorf("no elasticsearch output in %s", cfgPath)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", "/etc/vmlineage/vmlineage.yaml", "agent configuration file")
	return c
}

func newOutputsCmd() *cobra.Command {
	c := &cobra.Command{Use: "outputs", Short: "Work with the configured outputs"}
	var cfgPath string
	test := &cobra.Command{
		Use:   "test",
		Short: "Send one test record to each configured output and say what happened",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if len(cfg.Outputs) == 0 {
				return fmt.Errorf("no outputs in %s", cfgPath)
			}
			now := time.Now().UTC()
			r := record.Record{ID: record.ID("vmlineage-test", fmt.Sprintf("%012x", now.UnixMilli()), 0), PoolUUID: "vmlineage-test",
				VMUUID: "00000000-0000-4000-8000-000000000000", VMName: "vmlineage-outputs-test", Activity: record.Other,
				Operation: "outputs_test", Start: now, End: now, Result: record.Success, Source: record.SourceXAPI}
			failed := 0
			for _, o := range cfg.Outputs {
				out, err := pipeline.NewOutput(o, os.TempDir())
				if err != nil {
					fmt.Fprintf(c.OutOrStdout(), "%s: cannot start: %v\n", o.Name, err)
					failed++
					continue
				}
				var payload []byte
				if o.Type == "elasticsearch" || o.Format == "ecs" || (o.Format == "" && o.Type != "syslog") {
					payload = ecs.Marshal(&r, nil)
				} else {
					payload = cef.Marshal(&r, nil)
				}
				ctx, cancel := context.WithTimeout(cmdContext(c), 30*time.Second)
				err = pipeline.Raw(out).Send(ctx, []outputs.Item{{ID: r.ID, Payload: payload, Time: now}})
				cancel()
				out.Close()
				if err != nil {
					fmt.Fprintf(c.OutOrStdout(), "%s (%s): FAILED: %v\n", o.Name, o.Type, err)
					failed++
				} else {
					fmt.Fprintf(c.OutOrStdout(), "%s (%s): delivered test record %s\n", o.Name, o.Type, r.ID)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d outputs failed", failed, len(cfg.Outputs))
			}
			return nil
		},
	}
	test.Flags().StringVarP(&cfgPath, "config", "c", "/etc/vmlineage/vmlineage.yaml", "agent configuration file")
	c.AddCommand(test, newRedeliverCmd())
	return c
}

func newRedeliverCmd() *cobra.Command {
	var (
		cfgPath, file string
		dryRun        bool
		agentStopped  bool
		batch         int
	)
	c := &cobra.Command{
		Use:   "redeliver [NAME...]",
		Short: "Send what an output gave up on (its dead-letter file) again, once the cause is fixed",
		Long: `An output writes what its receiver refused for good (an Elasticsearch mapping error, a record too
big for the spool) to <data_dir>/deadletter/<output>.jsonl. Once the cause is fixed, this sends
those entries again through the output as configured now, oldest first, beside the running agent
(it does not use the agent's spool). The file is never rewritten: the offset redelivered so far is
kept beside it in <output>.jsonl.redelivered, so a later run sends only what came since, and what
the receiver refuses again is appended to the output's own dead-letter file for the next run.
With no NAME, every output that has a dead-letter file. --dry-run counts the entries waiting, by
status and error. A file output is written by the running agent alone: redeliver through one only
with the agent stopped (--agent-stopped); a stdout output has no receiver. Named, those fail; not
named, they are skipped with a note. Never edit or remove a dead-letter file while the agent
runs; the offset kept beside it makes that needless.`,
		RunE: func(c *cobra.Command, names []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if file != "" && len(names) != 1 {
				return fmt.Errorf("--file needs exactly one output NAME to send through")
			}
			byName := map[string]config.Output{}
			for _, o := range cfg.Outputs {
				byName[o.Name] = o
			}
			var todo []config.Output
			for _, n := range names {
				o, ok := byName[n]
				if !ok {
					return fmt.Errorf("no output named %q in %s", n, cfgPath)
				}
				todo = append(todo, o)
			}
			if len(names) == 0 {
				for _, o := range cfg.Outputs {
					if _, err := os.Stat(pipeline.DeadLetterPath(o, cfg.DataDir)); err == nil {
						todo = append(todo, o)
					}
				}
				if len(todo) == 0 {
					fmt.Fprintf(c.OutOrStdout(), "no dead-letter files in %s\n", filepath.Join(cfg.DataDir, "deadletter"))
					return nil
				}
			}
			failed := 0
			for _, o := range todo {
				path := file
				if path == "" {
					path = pipeline.DeadLetterPath(o, cfg.DataDir)
				}
				var refused error
				switch {
				case o.Type == "stdout" && !dryRun:
					refused = errors.New("a stdout output has no receiver to send to again (--dry-run counts its entries)")
				case o.Type == "file" && !dryRun && !agentStopped:
					refused = fmt.Errorf("the running agent writes %s alone (a second writer could cut its lines): stop the agent and give --agent-stopped", o.Path)
				}
				if refused != nil && len(names) == 0 {
					// Not asked for by name: said, not failed, so that a
					// timer running the plain command keeps succeeding.
					fmt.Fprintf(c.OutOrStdout(), "%s: skipped: %v\n", o.Name, refused)
					continue
				}
				err := refused
				if err == nil {
					err = redeliverOne(c, o, cfg.DataDir, path, outputs.RedeliverOptions{DryRun: dryRun, Batch: batch})
				}
				if err != nil {
					fmt.Fprintf(c.OutOrStdout(), "%s: FAILED: %v\n", o.Name, err)
					failed++
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d redeliveries failed", failed, len(todo))
			}
			return nil
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", "/etc/vmlineage/vmlineage.yaml", "agent configuration file")
	c.Flags().StringVar(&file, "file", "", "dead-letter file to send (default: the output's own)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "count the entries waiting, by status and error; send nothing")
	c.Flags().IntVar(&batch, "batch", 500, "entries per send")
	c.Flags().BoolVar(&agentStopped, "agent-stopped", false, "the agent is not running: file outputs may be written")
	return c
}

func redeliverOne(c *cobra.Command, o config.Output, dataDir, path string, opt outputs.RedeliverOptions) error {
	w := c.OutOrStdout()
	if _, err := os.Stat(path); err != nil {
		return err
	}
	out, err := pipeline.BuildOutput(o, dataDir)
	if err != nil {
		return err
	}
	defer out.Close()
	st, err := outputs.Redeliver(cmdContext(c), path, out, opt)
	reasons := make([]string, 0, len(st.ByReason))
	for r, n := range st.ByReason {
		reasons = append(reasons, fmt.Sprintf("%6d  %s", n, r))
	}
	sort.Strings(reasons)
	if st.Replaced {
		fmt.Fprintf(w, "%s: %s was written anew since the last redelivery: read from the top\n", o.Name, path)
	}
	fmt.Fprintf(w, "%s: %s: %d entries waiting after byte %d\n", o.Name, path, st.Pending, st.From)
	if st.Torn > 0 {
		fmt.Fprintf(w, "%s: %d fragments of entries whose write was cut short skipped (the output wrote those entries again whole)\n", o.Name, st.Torn)
	}
	for _, r := range reasons {
		fmt.Fprintf(w, "%s\n", r)
	}
	if !opt.DryRun {
		fmt.Fprintf(w, "%s: %d sent again; redelivered up to byte %d\n", o.Name, st.Sent, st.To)
	}
	return err
}

func newStatusCmd() *cobra.Command {
	var sf storeFlags
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the agent's state: pool, event token, records, and each output's delivery",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := cmdContext(c)
			st, err := sf.open()
			if err != nil {
				return err
			}
			defer st.Close()
			pool, _ := st.AgentState(ctx, "xapi.pool_uuid")
			token, _ := st.AgentState(ctx, "xapi.token")
			n, _ := st.CountRecords(ctx)
			last, _ := st.LastSeq(ctx)
			out := map[string]any{"pool_uuid": pool, "event_token": token, "records": n, "last_seq": last}
			if seq, hash, err := st.ChainHead(ctx); err == nil {
				unsealed, _ := st.Unsealed(ctx)
				out["chain"] = map[string]any{"head_seq": seq, "head_hash": hash, "unsealed": unsealed}
			}
			if dl := deadLetterStatus(sf); len(dl) > 0 {
				out["dead_letters"] = dl
			}
			health, _ := st.AgentState(ctx, "outputs.health")
			if health != "" {
				var h any
				if json.Unmarshal([]byte(health), &h) == nil {
					out["outputs"] = h
				}
			}
			enc := json.NewEncoder(c.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	}
	sf.bind(c)
	return c
}

// deadLetterStatus says, per dead-letter file of the data directory, how
// many entries wait for `outputs redeliver`.
func deadLetterStatus(sf storeFlags) map[string]any {
	cfg, err := sf.load()
	if err != nil {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(cfg.DataDir, "deadletter", "*.jsonl"))
	out := map[string]any{}
	for _, f := range files {
		st, err := outputs.PendingDeadLetters(f)
		e := map[string]any{"file": f, "pending": st.Pending, "redelivered_bytes": st.From}
		if err != nil {
			e["error"] = err.Error()
		}
		out[strings.TrimSuffix(filepath.Base(f), ".jsonl")] = e
	}
	return out
}
