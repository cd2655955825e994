package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/webui"
)

// tokenEnv names the environment variable that may hold the API token.
const tokenEnv = "VMLINEAGE_TOKEN"

func newServeCmd() *cobra.Command {
	var sf storeFlags
	var listen, tokenFile string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve the forensics web view (family tree, timelines, the pool at a past time)",
		Long: `Serve the forensics view of the lineage store: a web page (embedded, works offline) and the
JSON API behind it (/api/pools, /api/hosts, /api/tree, /api/vm/UUID, /api/at?t=TIME,
/api/search?q=NAME|UUID|IP, /api/marks).

The server listens on 127.0.0.1:8080 by default. Listening on any other (non-loopback)
address requires a bearer token, read from --token-file or the VMLINEAGE_TOKEN environment
variable; every API request must then send "Authorization: Bearer TOKEN". Open the page as
http://HOST:PORT/#token=TOKEN to hand the token to the browser without it reaching the server log.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			token, err := readToken(tokenFile)
			if err != nil {
				return err
			}
			// Refuse before opening anything: a public listener without a token is never right.
			if err := webui.CheckListen(listen, token); err != nil {
				return fmt.Errorf("--listen %s is not a loopback address: %w", listen, err)
			}
			st, err := sf.open()
			if err != nil {
				return err
			}
			defer st.Close()
			ln, err := webui.Listen(listen, token)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", listen, err)
			}
			log := newLogger(c.ErrOrStderr(), "info", "text")
			ctx, stop := signal.NotifyContext(cmdContext(c), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv := webui.New(st, webui.Options{Token: token, Logger: log})
			log.Info("vmlineage serve", "url", "http://"+ln.Addr().String()+"/", "store", st.Path(), "token", token != "")
			return srv.Serve(ctx, ln)
		},
	}
	sf.bind(c)
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to listen on (host:port); non-loopback needs a token")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the API bearer token (else $"+tokenEnv+")")
	return c
}

// readToken takes the token from the file when given, else from the
// environment. A given but empty file is an error, not "no token".
func readToken(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", errors.New("--token-file: " + file + " is empty")
		}
		return t, nil
	}
	return strings.TrimSpace(os.Getenv(tokenEnv)), nil
}
