package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	var short bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			out := c.OutOrStdout()
			if short {
				fmt.Fprintln(out, version)
				return nil
			}
			fmt.Fprintf(out, "vmlineage %s\n", version)
			commit, dirty, when := "unknown", "", ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					switch s.Key {
					case "vcs.revision":
						commit = s.Value
					case "vcs.modified":
						if s.Value == "true" {
							dirty = " (modified)"
						}
					case "vcs.time":
						when = " " + s.Value
					}
				}
			}
			fmt.Fprintf(out, "commit: %s%s%s\ngo: %s %s/%s\n", commit, dirty, when, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
	c.Flags().BoolVar(&short, "short", false, "print the version only")
	return c
}
