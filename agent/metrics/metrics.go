// Package metrics is the agent's Prometheus instrumentation: the counters the
// pipeline feeds (events in, records out per output, lag behind the pool,
// queue depth, output errors, detector restarts), and a small HTTP server
// for /metrics and /healthz.
//
// The pipeline owns the numbers; this package only holds them. A nil
// *Metrics is valid and does nothing, so code paths without metrics (tests,
// one-shot commands) need no guards.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// Namespace prefixes every metric name.
const Namespace = "vmlineage"

// Metrics are the agent's instruments. Create them with New.
type Metrics struct {
	EventsIn         prometheus.Counter     // XAPI events received from event.from
	RecordsCommitted prometheus.Counter     // lifecycle records the tracer committed to the store
	RecordsOut       *prometheus.CounterVec // records delivered, by output
	OutputErrors     *prometheus.CounterVec // failed deliveries, by output
	DeadLettered     *prometheus.CounterVec // records an output gave up on (dead-letter file), by output
	QueueDepth       *prometheus.GaugeVec   // records waiting, by queue (an output's spool, the tracer)
	LagSeconds       prometheus.Gauge       // pool time of the newest event seen minus pool time of the newest record committed
	LastEvent        prometheus.Gauge       // unix time the last event arrived (local clock)
	DetectorRestarts *prometheus.CounterVec // detector plugin restarts, by detector
	DetectorUp       *prometheus.GaugeVec   // 1 while a detector runs, by detector
	XAPIReconnects   prometheus.Counter     // event.from sessions re-established
	ChainHead        prometheus.Gauge       // chain sequence number of the last sealed record
	ChainUnsealed    prometheus.Gauge       // records waiting to be sealed (and shipped)
	RecordsMerged    prometheus.Counter     // records completed by a second sighting before the seal
	BuildInfo        *prometheus.GaugeVec   // 1, labelled with version
	// Alert enrichment (the syslog and HTTP intake).
	Alerts              *prometheus.CounterVec   // alerts enriched, by outcome
	AlertSeconds        prometheus.Histogram     // receipt to enriched document
	AlertPhaseSeconds   *prometheus.HistogramVec // the same, by phase
	AlertsInFlight      prometheus.Gauge         // alerts being enriched now
	DetectorCalls       *prometheus.CounterVec   // detector calls made or ruled out, by detector, call, outcome
	DetectorCallSeconds *prometheus.HistogramVec // detector calls made, by detector and call
	AlertsPruned        prometheus.Counter       // alerts the alert log's retention deleted

	mu      sync.Mutex
	hooks   []func()
	lastOut map[string]OutputStats // last absolute figures per output, for SetOutput
	lastDet map[string]int         // last start count per detector, for SetDetector
	merged  int64                  // last merged total, for SetChain
	pruned  int64                  // last pruned total, for SetAlertsPruned
}

// OutputStats are an output's own running totals (the spool shipper's
// Health: Acked, failed sends, records not yet acknowledged).
type OutputStats struct {
	Delivered uint64 // records acknowledged since start
	Errors    uint64 // failed delivery attempts since start
	Queued    int64  // records waiting
	// DeadLettered counts records written to the output's dead-letter file
	// since start (they wait for `vmlineage outputs redeliver`).
	DeadLettered uint64
}

// New creates the instruments and registers them on reg (use
// prometheus.NewRegistry(); the default registry is shared process-wide).
// Go runtime and process collectors are registered too.
func New(reg prometheus.Registerer, version string) *Metrics {
	m := &Metrics{
		EventsIn: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "events_in_total",
			Help: "XAPI events received through event.from."}),
		RecordsCommitted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "records_committed_total",
			Help: "Lifecycle records committed to the lineage store."}),
		RecordsOut: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "records_out_total",
			Help: "Records delivered, by output."}, []string{"output"}),
		OutputErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "output_errors_total",
			Help: "Failed deliveries (each retry counts), by output."}, []string{"output"}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "records_dead_lettered_total",
			Help: "Records an output gave up on and wrote to its dead-letter file (vmlineage outputs redeliver sends them again), by output."}, []string{"output"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "queue_depth",
			Help: "Records waiting to be delivered, by queue."}, []string{"queue"}),
		LagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "lag_seconds",
			Help: "How far the committed records are behind the pool: pool time of the newest event minus that of the newest committed record."}),
		LastEvent: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "last_event_timestamp_seconds",
			Help: "Unix time (agent clock) the last XAPI event arrived."}),
		DetectorRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "detector_restarts_total",
			Help: "Detector plugin restarts (crash, hang or failed health check), by detector."}, []string{"detector"}),
		DetectorUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "detector_up",
			Help: "1 while the detector plugin runs, 0 while it is down, restarting or refused."}, []string{"detector"}),
		XAPIReconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "xapi_reconnects_total",
			Help: "Times the XAPI session or event.from stream was re-established."}),
		ChainHead: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "chain_head_seq",
			Help: "Sequence number of the last record sealed into the hash chain."}),
		ChainUnsealed: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "chain_unsealed_records",
			Help: "Records stored but not yet sealed (waiting up to chain.settle for a second source or their actor)."}),
		RecordsMerged: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "records_merged_total",
			Help: "Records completed in place by a second sighting of the same operation (another source, the audit log) before they were sealed."}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
			Help: "Always 1; the version is in the label."}, []string{"version"}),
		Alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "alerts_total",
			Help: "Alerts enriched (syslog and HTTP intake), by outcome: matched, unmatched (sent out unchanged with a note), failed."}, []string{"outcome"}),
		AlertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "alert_enrich_seconds",
			Help: "Time from an alert's receipt to its enriched document, queueing included.", Buckets: latencyBuckets}),
		AlertPhaseSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "alert_phase_seconds",
			Help: "Time an alert spent in each phase of its enrichment: match, queue, context, detectors, encode.", Buckets: latencyBuckets}, []string{"phase"}),
		AlertsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "alerts_in_flight",
			Help: "Alerts being enriched at the time of the scrape."}),
		DetectorCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "detector_calls_total",
			Help: "Detector calls (call: enrich, on_record), by outcome: ok, skipped (ruled out by the detector's declared needs), down, timeout, crashed, failed, cancelled."},
			[]string{"detector", "call", "outcome"}),
		DetectorCallSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "detector_call_seconds",
			Help: "Duration of the detector calls made, whatever their outcome.", Buckets: latencyBuckets}, []string{"detector", "call"}),
	}
	m.AlertsPruned = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "alerts_pruned_total",
		Help: "Alerts deleted from the alert log by alerts.retention and alerts.max_alerts."})
	reg.MustRegister(m.Alerts, m.AlertSeconds, m.AlertPhaseSeconds, m.AlertsInFlight, m.DetectorCalls, m.DetectorCallSeconds, m.AlertsPruned)
	reg.MustRegister(m.EventsIn, m.RecordsCommitted, m.RecordsOut, m.OutputErrors, m.DeadLettered, m.QueueDepth, m.LagSeconds,
		m.LastEvent, m.DetectorRestarts, m.DetectorUp, m.XAPIReconnects, m.ChainHead, m.ChainUnsealed, m.RecordsMerged, m.BuildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.BuildInfo.WithLabelValues(version).Set(1)
	m.lastOut = map[string]OutputStats{}
	m.lastDet = map[string]int{}
	return m
}

// latencyBuckets run from 0.25 ms to about 8 s, doubling: enrichment's
// target is a few milliseconds, a detector's call timeout is seconds.
var latencyBuckets = prometheus.ExponentialBuckets(0.00025, 2, 16)

// AlertPhase is how long an alert spent in one phase of its enrichment.
type AlertPhase struct {
	Name string
	D    time.Duration
}

// Alert counts one enriched alert with its outcome, its total time and the
// time of each phase it went through.
func (m *Metrics) Alert(outcome string, total time.Duration, phases ...AlertPhase) {
	if m == nil {
		return
	}
	m.Alerts.WithLabelValues(outcome).Inc()
	m.AlertSeconds.Observe(total.Seconds())
	for _, p := range phases {
		m.AlertPhaseSeconds.WithLabelValues(p.Name).Observe(p.D.Seconds())
	}
}

// InFlight sets how many alerts are being enriched now.
func (m *Metrics) InFlight(n int) {
	if m != nil {
		m.AlertsInFlight.Set(float64(n))
	}
}

// DetectorCall counts one detector call with its outcome; made says the
// call was made (its duration is then observed).
func (m *Metrics) DetectorCall(detector, call, outcome string, made bool, d time.Duration) {
	if m == nil {
		return
	}
	m.DetectorCalls.WithLabelValues(detector, call, outcome).Inc()
	if made {
		m.DetectorCallSeconds.WithLabelValues(detector, call).Observe(d.Seconds())
	}
}

// OnScrape registers fn to run before every scrape through Gatherer, so
// that figures other parts keep themselves (spool stats, detector states)
// are read when asked for rather than copied on a timer.
func (m *Metrics) OnScrape(fn func()) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.hooks = append(m.hooks, fn)
	m.mu.Unlock()
}

// Gatherer wraps g so that the OnScrape hooks run first.
func (m *Metrics) Gatherer(g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		m.mu.Lock()
		hooks := append([]func(){}, m.hooks...)
		m.mu.Unlock()
		for _, h := range hooks {
			h()
		}
		return g.Gather()
	})
}

// SetOutput takes an output's running totals (absolute, monotonic since the
// output started) and moves the counters by the difference, so that outputs
// which count for themselves need no per-record call. A total that went
// down (the output was re-created) counts from zero again.
func (m *Metrics) SetOutput(name string, s OutputStats) {
	if m == nil {
		return
	}
	m.mu.Lock()
	prev := m.lastOut[name]
	m.lastOut[name] = s
	m.mu.Unlock()
	if s.Delivered < prev.Delivered {
		prev.Delivered = 0
	}
	if s.Errors < prev.Errors {
		prev.Errors = 0
	}
	if s.DeadLettered < prev.DeadLettered {
		prev.DeadLettered = 0
	}
	m.RecordsOut.WithLabelValues(name).Add(float64(s.Delivered - prev.Delivered))
	m.OutputErrors.WithLabelValues(name).Add(float64(s.Errors - prev.Errors))
	m.DeadLettered.WithLabelValues(name).Add(float64(s.DeadLettered - prev.DeadLettered))
	m.QueueDepth.WithLabelValues(name).Set(float64(s.Queued))
}

// Event counts n events from one event.from batch.
func (m *Metrics) Event(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.EventsIn.Add(float64(n))
	m.LastEvent.Set(float64(time.Now().UnixNano()) / 1e9)
}

// Committed counts one record committed to the store.
func (m *Metrics) Committed() {
	if m != nil {
		m.RecordsCommitted.Inc()
	}
}

// Delivered counts n records an output delivered.
func (m *Metrics) Delivered(output string, n int) {
	if m != nil && n > 0 {
		m.RecordsOut.WithLabelValues(output).Add(float64(n))
	}
}

// OutputError counts one failed delivery attempt of an output.
func (m *Metrics) OutputError(output string) {
	if m != nil {
		m.OutputErrors.WithLabelValues(output).Inc()
	}
}

// Queue sets the depth of a queue (an output's spool, say).
func (m *Metrics) Queue(queue string, depth int) {
	if m != nil {
		m.QueueDepth.WithLabelValues(queue).Set(float64(depth))
	}
}

// Lag sets how far records are behind the pool.
func (m *Metrics) Lag(d time.Duration) {
	if m != nil {
		if d < 0 {
			d = 0
		}
		m.LagSeconds.Set(d.Seconds())
	}
}

// DetectorRestart counts one restart of a detector plugin.
func (m *Metrics) DetectorRestart(detector string) {
	if m != nil {
		m.DetectorRestarts.WithLabelValues(detector).Inc()
	}
}

// Reconnect counts one re-established XAPI session or event stream.
func (m *Metrics) Reconnect() {
	if m != nil {
		m.XAPIReconnects.Inc()
	}
}

// SetDetector takes a detector's total start count (plugins.Status.Starts)
// and whether it runs now; every start after the first is a restart.
func (m *Metrics) SetDetector(name string, starts int, up bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	prev, seen := m.lastDet[name]
	m.lastDet[name] = starts
	m.mu.Unlock()
	restarts := func(n int) int { return max(n-1, 0) }
	if d := restarts(starts) - restarts(prev); d > 0 || !seen {
		m.DetectorRestarts.WithLabelValues(name).Add(float64(max(d, 0)))
	}
	v := 0.0
	if up {
		v = 1
	}
	m.DetectorUp.WithLabelValues(name).Set(v)
}

// SetAlertsPruned takes the running total of alerts the alert log's
// retention deleted (read at scrape time).
func (m *Metrics) SetAlertsPruned(total int64) {
	if m == nil {
		return
	}
	m.addTotal(m.AlertsPruned, &m.pruned, total)
}

// addTotal adds to c what a running total gained since the last call
// (*last, under m.mu): counters read as absolute figures at scrape time.
func (m *Metrics) addTotal(c prometheus.Counter, last *int64, total int64) {
	m.mu.Lock()
	d := total - *last
	*last = total
	m.mu.Unlock()
	if d > 0 {
		c.Add(float64(d))
	}
}

// SetChain takes the chain's head, the records waiting to be sealed and the
// running total of merged records (absolute figures, read at scrape time).
func (m *Metrics) SetChain(head, unsealed, merged int64) {
	if m == nil {
		return
	}
	m.ChainHead.Set(float64(head))
	m.ChainUnsealed.Set(float64(unsealed))
	m.addTotal(m.RecordsMerged, &m.merged, merged)
}
