package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

func newSimCmd() *cobra.Command {
	var scenario, listen, user, passwordFile, generate string
	var tls, list, hold bool
	var speed float64
	c := &cobra.Command{
		Use:   "sim",
		Short: "Run the XAPI simulator: a simulated pool master playing a scenario",
		Long: `Run a simulated XenServer pool master that speaks real XML-RPC (and JSON-RPC) over HTTP or
HTTPS and plays a scenario of timed lifecycle operations, emitting the event.from sequences a
real pool emits. Point "vmlineage agent --xapi-url" at the printed URL.

--scenario takes a built-in name (see --list) or a JSON file (schema: agent/xapi/xapisim/scenarios/scenario.schema.json).
--generate hosts=8,vms=1000,ops=10000[,seed=1] plays a generated pool instead.
The password is read from --password-file or VMLINEAGE_SIM_PASSWORD (default "xapisim").`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			out := c.OutOrStdout()
			if list {
				for _, n := range xapisim.BuiltinNames() {
					fmt.Fprintln(out, n)
				}
				return nil
			}
			sc, err := loadScenario(scenario, generate)
			if err != nil {
				return err
			}
			pw := os.Getenv("VMLINEAGE_SIM_PASSWORD")
			if passwordFile != "" {
				b, err := os.ReadFile(passwordFile)
				if err != nil {
					return fmt.Errorf("--password-file: %w", err)
				}
				pw = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
			}
			srv := xapisim.New(xapisim.Config{Scenario: sc, Listen: listen, TLS: tls, User: user, Password: pw})
			if err := srv.Start(); err != nil {
				return err
			}
			defer srv.Close()
			fmt.Fprintf(out, "xapisim: scenario %q, pool %s\nurl: %s\n", sc.Name, srv.PoolUUID(), srv.URL())
			if tls {
				fmt.Fprintf(out, "fingerprint: %s\n", srv.CertFingerprint())
			}
			ctx, stop := signal.NotifyContext(cmdContext(c), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := srv.Play(ctx, sc, speed); err != nil && ctx.Err() == nil {
				return err
			}
			fmt.Fprintln(out, "xapisim: scenario played")
			if hold && ctx.Err() == nil {
				fmt.Fprintln(out, "xapisim: still serving; interrupt to stop")
				<-ctx.Done()
			}
			return nil
		},
	}
	c.Flags().StringVar(&scenario, "scenario", "threat-model", "built-in scenario name or JSON file")
	c.Flags().StringVar(&generate, "generate", "", "generate a pool: hosts=N,vms=N,ops=N[,seed=N]")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8443", "address to listen on")
	c.Flags().BoolVar(&tls, "tls", true, "serve HTTPS with a self-signed certificate (its fingerprint is printed)")
	c.Flags().StringVar(&user, "user", "root", "accepted user name")
	c.Flags().StringVar(&passwordFile, "password-file", "", "file holding the accepted password")
	c.Flags().Float64Var(&speed, "speed", 1, "virtual seconds per real second (0: as fast as clients can follow)")
	c.Flags().BoolVar(&hold, "hold", true, "keep serving after the scenario has been played")
	c.Flags().BoolVar(&list, "list", false, "list the built-in scenarios")
	return c
}

func loadScenario(name, generate string) (*xapisim.Scenario, error) {
	if generate != "" {
		var g xapisim.GenConfig
		for _, kv := range strings.Split(generate, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("--generate: %q: want key=number", kv)
			}
			switch k {
			case "hosts":
				g.Hosts = n
			case "vms":
				g.VMs = n
			case "ops":
				g.Ops = n
			case "seed":
				g.Seed = int64(n)
			default:
				return nil, fmt.Errorf("--generate: unknown key %q (hosts, vms, ops, seed)", k)
			}
		}
		if g.Hosts <= 0 || g.VMs <= 0 {
			return nil, fmt.Errorf("--generate: hosts and vms must be positive")
		}
		return xapisim.Generate(g), nil
	}
	if sc, err := xapisim.Builtin(name); err == nil {
		return sc, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("--scenario %q is neither a built-in scenario (%s) nor a readable file: %w", name, strings.Join(xapisim.BuiltinNames(), ", "), err)
	}
	defer f.Close()
	sc, err := xapisim.LoadScenario(f)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", name, err)
	}
	return sc, nil
}
