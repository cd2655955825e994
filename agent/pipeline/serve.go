package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmlineage/vmlineage/agent/alerts"
	"github.com/vmlineage/vmlineage/agent/metrics"
	"github.com/vmlineage/vmlineage/agent/webui"
	"github.com/vmlineage/vmlineage/internal/listenauth"
)

// Healthy says whether the agent is doing its job: it has synced with the
// pool and heard from it recently (event.from returns at least every
// event_timeout on a live pool).
func (a *Agent) Healthy() error {
	if a.Tracer.PoolUUID() == "" {
		return errors.New("not yet synced with the pool")
	}
	st := a.Watcher.Stats()
	if st.LastError != "" && time.Since(st.LastErrorAt) < 2*a.cfg.XAPI.EventTimeout.D()+10*time.Second && a.sinceEvents() > a.cfg.XAPI.EventTimeout.D()+10*time.Second {
		return fmt.Errorf("XAPI: %s", st.LastError)
	}
	return nil
}

func (a *Agent) sinceEvents() time.Duration {
	if t := a.lastBatch.Load(); t != nil {
		return time.Since(*t)
	}
	return time.Since(a.started)
}

// serveSide starts the metrics endpoint and the web view when configured.
func (a *Agent) serveSide(ctx context.Context) error {
	if a.cfg.Metrics.Listen != "" {
		reg := prometheus.NewRegistry()
		m := a.metrics
		if m == nil {
			m = metrics.New(reg, a.opts.Version)
			a.metrics = m
		}
		m.OnScrape(func() {
			if head, _, err := a.Store.ChainHead(ctx); err == nil {
				unsealed, _ := a.Store.Unsealed(ctx)
				m.SetChain(head, unsealed, a.Store.Merged())
			}
			for _, o := range a.Outputs() {
				h := o.Health()
				m.SetOutput(h.Output, metrics.OutputStats{Delivered: h.Spool.Acked, Errors: h.Health.Failed, Queued: h.Spool.Records,
					DeadLettered: h.Health.DeadLettered + o.TooBig.Load()})
			}
		})
		var token string
		if f := a.cfg.Metrics.TokenFile; f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("metrics.token_file: %w", err)
			}
			if token = strings.TrimSpace(string(b)); len(token) < listenauth.MinTokenLen {
				return fmt.Errorf("metrics.token_file: the token is %d characters long; at least %d are required", len(token), listenauth.MinTokenLen)
			}
		} else if !listenauth.IsLoopback(a.cfg.Metrics.Listen) {
			a.log.Warn("metrics endpoint open to the network without a token (set metrics.token_file)", "addr", a.cfg.Metrics.Listen)
		}
		srv, err := metrics.Listen(a.cfg.Metrics.Listen, metrics.RequireToken(metrics.Handler(m.Gatherer(reg), a.Healthy), token))
		if err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		a.log.Info("metrics endpoint", "addr", srv.Addr())
		go srv.Serve(ctx)
	}
	if a.cfg.WebUI.Listen != "" {
		token := os.Getenv("VMLINEAGE_TOKEN")
		if a.cfg.WebUI.TokenFile != "" {
			b, err := os.ReadFile(a.cfg.WebUI.TokenFile)
			if err != nil {
				return fmt.Errorf("webui.token_file: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		ln, err := webui.Listen(a.cfg.WebUI.Listen, token)
		if err != nil {
			return fmt.Errorf("webui.listen: %w", err)
		}
		var src webui.AlertSource
		if svc, err := alerts.NewService(ctx, a.Store); err == nil {
			src = alertMarks{svc}
		} else {
			a.log.Warn("web view without alert marks", "err", err)
		}
		a.log.Info("forensics web view", "addr", ln.Addr().String())
		go webui.New(a.Store, webui.Options{Token: token, Alerts: src, Logger: a.log}).Serve(ctx, ln)
	}
	return nil
}

// alertMarks gives the web view the alerts of the last week.
type alertMarks struct{ svc *alerts.Service }

func (m alertMarks) Marks(ctx context.Context) (map[string]webui.Mark, error) {
	ms, err := m.svc.Marks(ctx, time.Now().Add(-7*24*time.Hour), 0)
	if err != nil {
		return nil, err
	}
	out := make(map[string]webui.Mark, len(ms))
	for k, v := range ms {
		out[k] = webui.Mark(v)
	}
	return out, nil
}
