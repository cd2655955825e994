package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/verify"
)

// errBroken is a verification that found a break: exit status 3, so a
// script can tell "tampered" from "could not check" (1).
type errBroken struct{ msg string }

func (e errBroken) Error() string { return e.msg }

func newVerifyCmd() *cobra.Command {
	var sf storeFlags
	var files, checkpoints []string
	var format string
	c := &cobra.Command{
		Use:   "verify [--data-dir D] [--file RECORDS.jsonl]... [--checkpoints FILE]...",
		Short: "Check the tamper-evident hash chain of the store, of a JSON-lines copy, and against checkpoints kept elsewhere",
		Long: `Check vmlineage's hash chain and name the first record that breaks it.

Without --file, the lineage store is checked (--data-dir or --config): sequence numbers
without a gap, each record's hash recomputed from its content, each link to the record
before, the head and the store's own checkpoints.

--file checks a JSON-lines copy of the records instead (a file output with format json,
rotated files oldest first); the copy may start anywhere in the chain. Outputs deliver at
least once, so after a crash a batch may be written again: records repeated unchanged are
accepted and counted as re-sent; a different record at a seq already seen is a break.

--checkpoints FILE reads every chain link FILE holds (the checkpoints and the records'
links that every output carries: ECS documents, CEF lines bare or in syslog lines, JSON
lines) and checks that the store still holds those records unchanged: the copy in a SIEM
vouches for the local store. The store is checked too.

Exit status: 0 verified, 3 a break was found, 1 the check could not be made.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				// Output is written for these two only: any other would
				// print nothing and exit 0, like a clean check.
				return fmt.Errorf("--format %q: want text or json", format)
			}
			ctx := cmdContext(c)
			out := c.OutOrStdout()
			report := map[string]any{}
			var broken []string
			if len(files) > 0 {
				var ins []verify.Input
				for _, f := range files {
					fh, err := os.Open(f)
					if err != nil {
						return err
					}
					defer fh.Close()
					ins = append(ins, verify.Input{Name: f, R: fh})
				}
				res, err := verify.File(ins)
				if err != nil {
					return err
				}
				report["file"] = res
				if res.Problem != nil {
					broken = append(broken, res.Problem.Error())
				} else if format == "text" {
					fmt.Fprintf(out, "file: %d records verified (chain seq %d to %d), %d checkpoints matched", res.Records, res.First, res.Last, res.Checkpoints)
					if res.Resent > 0 {
						fmt.Fprintf(out, ", %d lines re-sent after an interruption (the same records again)", res.Resent)
					}
					fmt.Fprintln(out)
				}
			}
			if len(files) == 0 || len(checkpoints) > 0 {
				st, err := sf.open()
				if err != nil {
					return err
				}
				defer st.Close()
				v, err := st.VerifyChain(ctx)
				if err != nil {
					return err
				}
				report["store"] = v
				if v.Break != nil {
					broken = append(broken, "store: "+v.Break.Error())
				} else if format == "text" {
					fmt.Fprintf(out, "store: %d records verified, head seq %d hash %s, %d checkpoints matched, %d records not sealed yet\n",
						v.Records, v.Head, v.HeadHash, v.Checkpoints, v.Unsealed)
				}
				for _, f := range checkpoints {
					fh, err := os.Open(f)
					if err != nil {
						return err
					}
					links, skipped, err := verify.Links(fh)
					fh.Close()
					if err != nil {
						return fmt.Errorf("%s: %w", f, err)
					}
					if len(links) == 0 {
						return fmt.Errorf("%s: no chain link or checkpoint found in %d lines", f, skipped)
					}
					res, err := verify.AgainstStore(ctx, st, f, links)
					if err != nil {
						return err
					}
					report["checkpoints:"+f] = res
					if res.Problem != nil {
						broken = append(broken, res.Problem.Error())
					} else if format == "text" {
						fmt.Fprintf(out, "%s: %d links match the store (%d checkpoints), %d lines without a link\n", f, res.Matched, res.Checkpoints, skipped)
					}
				}
			}
			if format == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				report["verified"] = len(broken) == 0
				if err := enc.Encode(report); err != nil {
					return err
				}
			}
			if len(broken) > 0 {
				return errBroken{"chain broken: " + strings.Join(broken, "; ")}
			}
			return nil
		},
	}
	sf.bind(c)
	c.Flags().StringArrayVar(&files, "file", nil, "a JSON-lines copy of the records to check (repeat for rotated files, oldest first)")
	c.Flags().StringArrayVar(&checkpoints, "checkpoints", nil, "a file holding chain links or checkpoints (ECS, CEF or JSON lines) to check the store against")
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
}

// exitCode maps an error from a command to the process's exit status.
func exitCode(err error) int {
	var b errBroken
	if errors.As(err, &b) {
		return 3
	}
	return 1
}
