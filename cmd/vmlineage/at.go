package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newAtCmd() *cobra.Command {
	var sf storeFlags
	var format, pool string
	c := &cobra.Command{
		Use:   "at TIME",
		Short: "Show which VM ran on which host at a past time",
		Long: `Reconstruct the pool at TIME (RFC 3339, or "YYYY-MM-DD HH:MM[:SS]" in UTC): every VM that
existed then, on which host and in which power state.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := cmdContext(c)
			at, err := parseTime(args[0])
			if err != nil {
				return err
			}
			st, err := sf.open()
			if err != nil {
				return err
			}
			defer st.Close()
			states, err := st.StateAt(ctx, pool, at)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			if format == "json" {
				enc := json.NewEncoder(out)
				for _, s := range states {
					if err := enc.Encode(map[string]any{"vm_uuid": s.VM.UUID, "name": s.VM.Name, "kind": s.VM.Kind,
						"power_state": s.PowerState, "host_uuid": s.HostUUID, "host_name": s.HostName}); err != nil {
						return err
					}
				}
				return nil
			}
			if format != "table" {
				return fmt.Errorf("--format: %q is not table or json", format)
			}
			tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "HOST\tVM\tUUID\tKIND\tPOWER STATE\n")
			for _, s := range states {
				host := s.HostName
				if host == "" {
					host = "-"
				}
				ps := s.PowerState
				if ps == "" {
					ps = "unknown"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", host, s.VM.Name, s.VM.UUID, s.VM.Kind, ps)
			}
			return tw.Flush()
		},
	}
	sf.bind(c)
	c.Flags().StringVar(&format, "format", "table", "table or json")
	c.Flags().StringVar(&pool, "pool", "", "only this pool uuid")
	return c
}
