package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/alerts"
	"github.com/vmlineage/vmlineage/agent/config"
)

func newAlertsCmd() *cobra.Command {
	c := &cobra.Command{Use: "alerts", Short: "Take in security alerts and enrich them with lineage suspects"}
	c.AddCommand(newAlertsServeCmd(), newAlertsExportCmd())
	return c
}

func newAlertsExportCmd() *cobra.Command {
	var sf storeFlags
	var vm, since, until string
	var limit int
	c := &cobra.Command{
		Use:   "export",
		Short: "Print the alerts stored in the alert log as JSON lines",
		Long: `Print the alerts the alert log (alerts.db beside the lineage store) holds, oldest first, one JSON object
per line: seq, id, time, received, source, matched, vms (vm_uuid, field, value), alert (as received) and
enriched (as sent out). The log stores the documents compressed; this is how to read them. It only reads:
the agent may be running. --since and --until select by the alert's own time.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := cmdContext(c)
			cfg, err := sf.load()
			if err != nil {
				return err
			}
			var f alerts.ExportFilter
			f.Limit = limit
			if f.Since, f.Until, err = parseTimeRange(since, until); err != nil {
				return err
			}
			if vm != "" {
				st, err := sf.open()
				if err != nil {
					return err
				}
				v, err := resolveVM(ctx, st, vm)
				st.Close()
				if err != nil {
					return fmt.Errorf("--vm: %w", err)
				}
				f.VMUUID = v.UUID
			}
			w := bufio.NewWriter(c.OutOrStdout())
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			err = alerts.ExportAlerts(ctx, alerts.AlertsPath(cfg.StorePath()), f, func(a alerts.StoredAlert) error {
				return enc.Encode(a)
			})
			if ferr := w.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
	sf.bind(c)
	c.Flags().StringVar(&vm, "vm", "", "only alerts tied to this VM (uuid or name)")
	c.Flags().StringVar(&since, "since", "", "only alerts of this time or later")
	c.Flags().StringVar(&until, "until", "", "only alerts before this time")
	c.Flags().IntVar(&limit, "limit", 0, "print at most this many alerts")
	return c
}

func newAlertsServeCmd() *cobra.Command {
	var sf storeFlags
	var df detectorFlags
	var udpAddr, tcpAddr, httpAddr, tokenFile, outPath, zoneName string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Listen for CEF alerts over syslog and ECS alerts over HTTP; write them enriched",
		Long: `Listen for alerts and write each one enriched, as a JSON line, to --out (default stdout):
  --syslog-udp / --syslog-tcp  CEF over syslog (RFC 5424 or RFC 3164 header; TCP octet-counted or LF-framed)
  --http                       POST /v1/alerts with ECS JSON (one object, an array, or JSON lines) and
                               "Authorization: Bearer <token>" (token from --token-file or $VMLINEAGE_ALERTS_TOKEN);
                               the response carries the enriched alerts.
Alerts that cannot be read are written as error documents (vmlineage.error, event.original).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if udpAddr == "" && tcpAddr == "" && httpAddr == "" {
				return errors.New("nothing to listen on: give --syslog-udp, --syslog-tcp or --http")
			}
			zone, err := config.Alerts{Timezone: zoneName}.Zone()
			if err != nil {
				return fmt.Errorf("--timezone: %w", err)
			}
			ctx, cancel := signal.NotifyContext(cmdContext(c), os.Interrupt, syscall.SIGTERM)
			defer cancel()
			e, stop, err := df.start(ctx, c, &sf)
			if err != nil {
				return err
			}
			defer stop()
			log := newLogger(c.ErrOrStderr(), df.logLevel, "text")
			var out io.Writer = c.OutOrStdout()
			if outPath != "" && outPath != "-" {
				f, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
				if err != nil {
					return err
				}
				defer f.Close()
				out = f
			}
			var mu sync.Mutex
			emit := func(js []byte) {
				mu.Lock()
				defer mu.Unlock()
				out.Write(append(js, '\n'))
			}
			onErr := func(raw []byte, err error) { emit(alerts.ErrorDoc(raw, err, time.Now())) }
			errc := make(chan error, 3)
			n := 0
			ord := alerts.NewOrdered(e, 0)
			defer ord.Close() // the alerts under way are written before stop
			sl := &alerts.SyslogListener{Ordered: ord, Emit: emit, Log: log, OnError: onErr, Zone: zone}
			if udpAddr != "" {
				pc, err := net.ListenPacket("udp", udpAddr)
				if err != nil {
					return err
				}
				n++
				go func() { errc <- sl.ServeUDP(ctx, pc) }()
				log.Info("listening for CEF over syslog", "udp", pc.LocalAddr())
			}
			if tcpAddr != "" {
				ln, err := net.Listen("tcp", tcpAddr)
				if err != nil {
					return err
				}
				n++
				go func() { errc <- sl.ServeTCP(ctx, ln) }()
				log.Info("listening for CEF over syslog", "tcp", ln.Addr())
			}
			if httpAddr != "" {
				token := os.Getenv("VMLINEAGE_ALERTS_TOKEN")
				if tokenFile != "" {
					b, err := os.ReadFile(tokenFile)
					if err != nil {
						return fmt.Errorf("--token-file: %w", err)
					}
					token = strings.TrimSpace(string(b))
				}
				h, err := alerts.HTTPHandlerOrderedErrors(token, ord, emit, onErr, log)
				if err != nil {
					return fmt.Errorf("%w (give --token-file or set VMLINEAGE_ALERTS_TOKEN)", err)
				}
				ln, err := net.Listen("tcp", httpAddr)
				if err != nil {
					return err
				}
				srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
				n++
				// Serve returns as soon as Shutdown begins: its end is
				// sent instead, once the requests under way have been
				// answered (before ord.Close and stop, deferred).
				go srv.Serve(ln)
				go func() { <-ctx.Done(); errc <- alerts.ShutdownHTTP(srv, log) }()
				log.Info("listening for ECS alerts", "http", ln.Addr())
			}
			for ; n > 0; n-- {
				if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
					return err
				}
			}
			return nil
		},
	}
	sf.bind(c)
	df.bind(c)
	c.Flags().StringVar(&udpAddr, "syslog-udp", "", "address for CEF over syslog/UDP, e.g. :5514")
	c.Flags().StringVar(&tcpAddr, "syslog-tcp", "", "address for CEF over syslog/TCP, e.g. :5514")
	c.Flags().StringVar(&httpAddr, "http", "", "address for POST /v1/alerts, e.g. 127.0.0.1:8088")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the HTTP bearer token")
	c.Flags().StringVar(&outPath, "out", "-", "file to append enriched alerts to (- for stdout)")
	c.Flags().StringVar(&zoneName, "timezone", "", "zone of syslog alert times that carry none (RFC 3164 headers, CEF dates): IANA name or Local (default UTC)")
	return c
}
