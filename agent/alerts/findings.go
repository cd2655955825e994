package alerts

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// RecordDetectors is what the pump needs of plugins.Manager.
type RecordDetectors interface {
	OnRecord(ctx context.Context, r *record.Record) []plugins.Result
}

// Pump runs streaming detection beside the tracer: Tracer.OnRecord hands it
// each committed record without waiting (the tracer must never wait for a
// detector), a worker passes the records to the detectors in order and
// each finding to Sink as an ECS document. The queue is bounded; when it is
// full, OnRecord waits up to a second and then counts the record as missed
// (logged): the record itself is safe in the store, only its streaming
// detection is skipped.
type Pump struct {
	dets RecordDetectors
	sink func(doc []byte)
	log  *slog.Logger
	q    chan *record.Record
	wg   sync.WaitGroup

	mu     sync.Mutex
	missed int
}

// NewPump starts the worker; Close stops it after the queue drains.
func NewPump(dets RecordDetectors, sink func(doc []byte), log *slog.Logger, queue int) *Pump {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if queue <= 0 {
		queue = 10000
	}
	p := &Pump{dets: dets, sink: sink, log: log, q: make(chan *record.Record, queue)}
	p.wg.Add(1)
	go p.run()
	return p
}

// OnRecord queues a copy of r; it has the signature of lifecycle.Tracer.OnRecord.
func (p *Pump) OnRecord(r *record.Record) {
	cp := *r
	select {
	case p.q <- &cp:
		return
	default:
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case p.q <- &cp:
	case <-t.C:
		p.mu.Lock()
		p.missed++
		p.mu.Unlock()
		p.log.Error("streaming detection queue full; record not passed to detectors", "record", r.ID)
	}
}

// Missed is how many records were not passed to the detectors.
func (p *Pump) Missed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.missed
}

// Close drains the queue and stops the worker.
func (p *Pump) Close() {
	close(p.q)
	p.wg.Wait()
}

func (p *Pump) run() {
	defer p.wg.Done()
	for r := range p.q {
		for _, res := range p.dets.OnRecord(context.Background(), r) {
			if res.Err != nil {
				p.log.Warn("detector failed on record", "detector", res.Detector, "record", r.ID, "error", res.Err)
				continue
			}
			for _, f := range res.Findings {
				p.sink(FindingECS(f, r))
			}
		}
	}
}

// FindingECS renders a finding as an ECS document: event.kind "alert",
// event.module "vmlineage", event.dataset "vmlineage.finding", rule.name
// the finding's kind, message its summary, event.severity, the VM under
// cloud.instance.id / host.name, and the finding itself under
// vmlineage.finding (with the record id it came from).
func FindingECS(f plugins.Finding, r *record.Record) []byte {
	t := f.Time
	if t.IsZero() && r != nil {
		t = r.Start
	}
	doc := map[string]any{
		"@timestamp": timeString(t),
		"event": map[string]any{"kind": "alert", "module": "vmlineage", "dataset": "vmlineage.finding",
			"severity": f.Severity, "category": []string{"host"}, "type": []string{"info"}},
		"rule":      map[string]any{"name": f.Kind, "ruleset": f.Detector},
		"message":   f.Summary,
		"vmlineage": map[string]any{"finding": f},
	}
	if f.VMUUID != "" {
		doc["cloud"] = map[string]any{"instance": map[string]any{"id": f.VMUUID}}
	}
	if f.VMName != "" {
		doc["host"] = map[string]any{"name": f.VMName}
	}
	if r != nil {
		doc["vmlineage"].(map[string]any)["record_id"] = r.ID
	}
	js, _ := json.Marshal(doc)
	return js
}
