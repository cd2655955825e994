package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// defaultConfigPath is where the packages install the configuration.
const defaultConfigPath = "/etc/vmlineage/vmlineage.yaml"

func newConfigCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Check the agent configuration",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(newConfigCheckCmd())
	return c
}

func newConfigCheckCmd() *cobra.Command {
	var connect bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Validate a configuration file (default " + defaultConfigPath + ")",
		Long: `Validate an agent configuration file and report every problem with its key and line:
unknown keys (with the nearest known one), values of the wrong type, bad values, unreadable
password or CA files. With --connect it also logs in to XAPI with the configured credentials.
Secrets are never printed: neither the password nor the value of an unknown key.
Exit status: 0 when the agent would start (warnings allowed), 1 otherwise.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path := defaultConfigPath
			if len(args) == 1 {
				path = args[0]
			}
			opts := config.CheckOptions{Timeout: timeout}
			if connect {
				opts.Connect = connectXAPI
			}
			_, problems := config.Check(path, opts)
			errs, warns := 0, 0
			out := c.OutOrStdout()
			for _, p := range problems {
				if p.Warning {
					warns++
				} else {
					errs++
				}
				fmt.Fprintf(out, "%s: %s\n", path, p)
			}
			if errs > 0 {
				return fmt.Errorf("%s: %d error(s), %d warning(s)", path, errs, warns)
			}
			what := "OK"
			if connect {
				what = "OK, XAPI login succeeded"
			}
			fmt.Fprintf(out, "%s: %s (%d warning(s))\n", path, what, warns)
			return nil
		},
	}
	c.Flags().BoolVar(&connect, "connect", false, "also log in to XAPI with the configured credentials (the outputs are not contacted)")
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "bound of the --connect attempts")
	return c
}

// connectXAPI logs in and out once. Errors are attributed to xapi.url; the
// config checker scrubs the password from them.
func connectXAPI(ctx context.Context, cfg config.Config, password string) []config.KeyError {
	if cfg.XAPI.URL == "" {
		return []config.KeyError{{Key: "xapi.url", Err: fmt.Errorf("not set: nothing to connect to")}}
	}
	x := cfg.XAPI
	client, err := xapi.New(xapi.Config{URL: x.URL, User: x.User, Password: password, Originator: x.Originator,
		CAFile: x.CAFile, Fingerprint: x.Fingerprint, AllowHTTP: x.AllowHTTP, Transport: x.Transport,
		CallTimeout: x.CallTimeout.D(), MaxResponseBytes: x.MaxResponseBytes, Logger: newLogger(discard{}, "error", "text")})
	if err != nil {
		return []config.KeyError{{Key: "xapi.url", Err: err}}
	}
	if err := client.Login(ctx); err != nil {
		return []config.KeyError{{Key: "xapi.url", Err: fmt.Errorf("XAPI login as %q: %w", x.User, err)}}
	}
	client.Logout(ctx)
	return nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
