package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/agent/backend/esbackend"
	"github.com/vmlineage/vmlineage/agent/backend/storebackend"
	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/outputs/elasticsearch"
)

// OpenLineage opens the lineage backend cfg.Lineage names: the store st
// (read through a reader of its own) or the VM documents behind the
// elasticsearch output lineage.output (st may then be nil). Close it.
func OpenLineage(cfg config.Config, st *lineage.Store) (backend.Lineage, error) {
	switch cfg.Lineage.Backend {
	case "", config.LineageStore:
		if st == nil {
			return nil, errors.New("lineage.backend store: no lineage store")
		}
		return storebackend.Open(st, lineage.ReaderOptions{})
	case config.LineageElasticsearch:
		oc, err := cfg.LineageOutput()
		if err != nil {
			return nil, err
		}
		out, err := buildOutput(oc, cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("lineage.backend elasticsearch: output %s: %w", oc.Name, err)
		}
		es := out.(*elasticsearch.Output)
		return esbackend.New(es.Client(), es.VMIndex(), es.RecordsPattern()), nil
	}
	return nil, fmt.Errorf("lineage.backend: %q is not store or elasticsearch", cfg.Lineage.Backend)
}

// startVMIndex keeps the VM index of every elasticsearch output in step
// with the store (esbackend.Writer), until the returned stop is called.
func (a *Agent) startVMIndex(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, o := range a.Outputs() {
		es, ok := Raw(o).(*elasticsearch.Output)
		if !ok {
			continue
		}
		w := &esbackend.Writer{Store: a.Store, Sink: es, Key: "vmindex." + o.Name + ".cursor",
			Log: a.log.With(slog.String("output", o.Name))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("VM index writer stopped", "output", o.Name, "err", err)
			}
		}()
		a.log.Info("writing VM documents", "output", o.Name, "index", es.VMIndex())
	}
	return func() { cancel(); wg.Wait() }
}
