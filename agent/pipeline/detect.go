package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts"
	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/metrics"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/plugins"
)

// detection runs the detector plugins beside the tracer: every committed
// record goes to their OnRecord (streaming detection), alerts taken in over
// syslog or HTTP are enriched with lineage, and findings and enriched alerts
// go to the outputs.
type detection struct {
	svc       *alerts.Service
	mgr       *plugins.Manager
	enr       *alerts.Enricher
	pump      *alerts.Pump
	ordered   *alerts.Ordered // the syslog and HTTP intake
	http      *http.Server    // the HTTP intake, shut down by close
	lin       backend.Lineage
	stopIndex func() // the VM index writers (elasticsearch outputs)
}

func (a *Agent) startDetection(ctx context.Context) (*detection, error) {
	d := &detection{stopIndex: a.startVMIndex(ctx)}
	dc := a.cfg.Detectors
	if dc.Dir == "" {
		return d, nil
	}
	pins := map[string]string{}
	pinsFile := dc.PinsFile
	if pinsFile == "" {
		if p := filepath.Join(dc.Dir, "SHA256SUMS"); fileExists(p) {
			pinsFile = p
		}
	}
	if pinsFile != "" {
		p, err := plugins.ReadPins(pinsFile)
		if err != nil {
			return nil, fmt.Errorf("detectors.pins_file: %w", err)
		}
		pins = p
	}
	for k, v := range dc.Pins {
		pins[k] = v
	}
	var svc *alerts.Service
	var err error
	if a.cfg.Lineage.Backend == config.LineageElasticsearch {
		lin, lerr := OpenLineage(a.cfg, a.Store)
		if lerr != nil {
			d.close()
			return nil, lerr
		}
		d.lin = lin
		svc, err = alerts.NewServiceWith(ctx, lin, alerts.AlertsPath(a.Store.Path()), a.log)
	} else {
		svc, err = alerts.NewService(ctx, a.Store)
	}
	if err != nil {
		d.close()
		return nil, err
	}
	svc.SetRetention(alerts.Retention{MaxAge: a.cfg.Alerts.Retention.D(), MaxAlerts: a.cfg.Alerts.MaxAlerts})
	d.svc = svc
	m := a.metrics // nil without metrics.listen: every call below is then a no-op
	mgr, err := plugins.NewManager(plugins.Config{Dir: dc.Dir, Pins: pins, CallTimeout: dc.CallTimeout.D(),
		Observe: func(o plugins.Observation) { m.DetectorCall(o.Detector, o.Call, o.Outcome, o.Made(), o.Duration) }}, svc)
	if err != nil {
		d.close()
		return nil, fmt.Errorf("detectors: %w", err)
	}
	mgr.Start(ctx)
	d.mgr, d.enr = mgr, alerts.NewEnricher(svc, mgr, a.log)
	if m != nil {
		d.enr.Observe = func(tm alerts.Timing) {
			phases := []metrics.AlertPhase{{Name: "queue", D: tm.Queue}, {Name: "match", D: tm.Match}, {Name: "encode", D: tm.Encode}}
			if tm.Outcome == alerts.TimingMatched {
				phases = append(phases, metrics.AlertPhase{Name: "context", D: tm.Context}, metrics.AlertPhase{Name: "detectors", D: tm.Detectors})
			}
			m.Alert(tm.Outcome, tm.Total, phases...)
		}
	}
	d.pump = alerts.NewPump(mgr, func(doc []byte) { a.emitDoc(ctx, doc, false) }, a.log, 0)
	// The listeners enrich several alerts at once, in arrival order.
	emit := func(js []byte) { a.emitDoc(ctx, js, true) }
	if a.cfg.Alerts.SyslogListen != "" || a.cfg.Alerts.HTTPListen != "" {
		d.ordered = alerts.NewOrdered(d.enr, 0)
		// An agent that takes alerts collects less often for their
		// latency (see alerts.GCHeadroom); for the process's life.
		alerts.TuneGC()
	}
	m.OnScrape(func() {
		for _, st := range mgr.Status() {
			m.SetDetector(st.Name, st.Starts, st.State == plugins.StateRunning)
		}
		if d.ordered != nil {
			m.InFlight(d.ordered.Busy())
		}
		m.SetAlertsPruned(svc.Pruned())
	})
	if addr := a.cfg.Alerts.SyslogListen; addr != "" {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			d.close()
			return nil, fmt.Errorf("alerts.syslog_listen: %w", err)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			d.close()
			return nil, fmt.Errorf("alerts.syslog_listen: %w", err)
		}
		// A message that is not an alert goes out as an error document,
		// as in `alerts serve` (ECS outputs only: it has no CEF form).
		onErr := func(raw []byte, err error) { a.emitDoc(ctx, alerts.ErrorDoc(raw, err, time.Now()), false) }
		zone, _ := a.cfg.Alerts.Zone() // checked with the configuration
		l := &alerts.SyslogListener{Ordered: d.ordered, Emit: emit, Log: a.log, OnError: onErr, Zone: zone}
		go l.ServeUDP(ctx, pc)
		go l.ServeTCP(ctx, ln)
		a.log.Info("alert intake over syslog", "addr", addr)
	}
	if addr := a.cfg.Alerts.HTTPListen; addr != "" {
		b, err := os.ReadFile(a.cfg.Alerts.TokenFile)
		if err != nil {
			d.close()
			return nil, fmt.Errorf("alerts.token_file: %w", err)
		}
		onErr := func(raw []byte, err error) { a.emitDoc(ctx, alerts.ErrorDoc(raw, err, time.Now()), false) }
		h, err := alerts.HTTPHandlerOrderedErrors(strings.TrimSpace(string(b)), d.ordered, emit, onErr, a.log)
		if err != nil {
			d.close()
			return nil, err
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			d.close()
			return nil, fmt.Errorf("alerts.http_listen: %w", err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		// No new request once the agent stops; close waits for those
		// under way before the enricher stops.
		context.AfterFunc(ctx, func() { alerts.ShutdownHTTP(srv, a.log) })
		d.http = srv
		a.log.Info("alert intake over HTTP", "addr", ln.Addr().String())
	}
	return d, nil
}

func (d *detection) onRecord(r *record.Record) {
	if d != nil && d.pump != nil {
		d.pump.OnRecord(r)
	}
}

func (d *detection) close() {
	if d == nil {
		return
	}
	if d.http != nil {
		alerts.ShutdownHTTP(d.http, nil) // before Ordered: no request may start an alert after it closed
	}
	if d.ordered != nil {
		d.ordered.Close() // the alerts under way go out before the detectors stop
	}
	if d.pump != nil {
		d.pump.Close()
	}
	if d.mgr != nil {
		d.mgr.Close()
	}
	if d.svc != nil {
		d.svc.Close()
	}
	if d.lin != nil {
		d.lin.Close()
	}
	if d.stopIndex != nil {
		d.stopIndex()
	}
}

// emitDoc sends a finding or an enriched alert (ECS JSON) to every output
// through its spool: as is to ECS outputs, as CEF (enriched alerts only, see
// agent/alerts) to CEF outputs.
func (a *Agent) emitDoc(ctx context.Context, doc []byte, enriched bool) {
	sum := sha256.Sum256(doc)
	id := hex.EncodeToString(sum[:16])
	for _, o := range a.Outputs() {
		payload := doc
		if o.cef() {
			if !enriched {
				continue // findings have no CEF form yet; they are in ECS outputs and the store
			}
			c, err := alerts.EnrichedCEF(doc, a.opts.Version)
			if err != nil {
				a.log.Warn("enriched alert has no CEF form", "err", err)
				continue
			}
			payload = c
		}
		if err := o.spool.Append(ctx, []outputs.Item{{ID: id, Payload: payload, Time: time.Now()}}); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("output refused an alert document", "output", o.Name, "err", err)
		}
	}
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
