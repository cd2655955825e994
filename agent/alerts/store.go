package alerts

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/agent/backend/storebackend"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// Service is the host side of the detectors' Lineage (served to them over
// go-plugin's broker): lineage reads from a backend (the local store or
// Elasticsearch), which VMs alerted from the alert log. The alert log
// (tables alerts, alert_vms) lives in the lineage store file.
type Service struct {
	lin       backend.Lineage
	ownLin    bool // lin was opened by NewService
	st        *lineage.Store
	db        *sql.DB
	log       *alertLog
	queries   atomic.Int64 // alert log statements
	closeOnce sync.Once
}

var _ plugins.Lineage = (*Service)(nil)

// NewService reads lineage from the store (through a reader of its own,
// see storebackend.Open) and keeps the alert log beside it
// (AlertsPath), moving there the alerts an earlier version kept in the
// store.
func NewService(ctx context.Context, st *lineage.Store) (*Service, error) {
	lin, err := storebackend.Open(st, lineage.ReaderOptions{})
	if err != nil {
		return nil, err
	}
	s, err := NewServiceWith(ctx, lin, AlertsPath(st.Path()), nil)
	if err != nil {
		lin.Close()
		return nil, err
	}
	s.ownLin = true
	if err := migrateFromStore(ctx, s.db, st); err != nil {
		s.Close()
		return nil, err
	}
	// The moved alerts count from now on, not from the writer's next look.
	if err := s.log.syncNow(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("alerts: read the moved alerts: %w", err)
	}
	return s, nil
}

// NewServiceWith reads lineage from lin and keeps the alert log in the
// SQLite file alertsPath (created when missing). The service does not
// close lin.
func NewServiceWith(ctx context.Context, lin backend.Lineage, alertsPath string, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := openAlertDB(ctx, alertsPath)
	if err != nil {
		return nil, err
	}
	s := &Service{lin: lin, db: db}
	l, err := newAlertLog(ctx, s.db, log, &s.queries)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.log = l
	return s, nil
}

// Flush returns once the alerts enriched before it are stored.
func (s *Service) Flush() { s.log.flush() }

// Close writes the alerts still queued and closes the backend NewService
// opened; the store (and a backend given to NewServiceWith) stay open.
func (s *Service) Close() {
	s.closeOnce.Do(func() {
		s.log.close()
		s.log.release()
		s.db.Close()
		if s.ownLin {
			s.lin.Close()
		}
	})
}

// Backend is where lineage is read from.
func (s *Service) Backend() backend.Lineage { return s.lin }

// SlowCommits are the alert log's last commits that took 20 ms or more,
// oldest first: while one runs on a small machine, enrichment has a core
// less (BenchmarkEnrich1MVMs lines them up with its slowest alerts).
func (s *Service) SlowCommits() []Span { return s.log.slowCommits() }

// Queries is how many queries the service made (backend and alert log).
func (s *Service) Queries() int64 {
	n := s.queries.Load()
	if c, ok := s.lin.(backend.Counter); ok {
		n += c.Queries()
	}
	return n
}

// VM implements plugins.Lineage.
func (s *Service) VM(ctx context.Context, uuid string) (plugins.VM, error) {
	return s.lin.VM(ctx, uuid)
}

// Ancestors implements plugins.Lineage.
func (s *Service) Ancestors(ctx context.Context, uuid string) ([]plugins.VM, error) {
	return s.lin.Ancestors(ctx, uuid)
}

// Descendants implements plugins.Lineage.
func (s *Service) Descendants(ctx context.Context, uuid string) ([]plugins.VM, error) {
	return s.lin.Descendants(ctx, uuid)
}

// Siblings implements plugins.Lineage.
func (s *Service) Siblings(ctx context.Context, uuid string) ([]plugins.VM, error) {
	return s.lin.Siblings(ctx, uuid)
}

// Family implements plugins.Lineage.
func (s *Service) Family(ctx context.Context, uuid string) ([]plugins.VM, error) {
	return s.lin.Family(ctx, uuid)
}

// StatesAt implements plugins.Lineage.
func (s *Service) StatesAt(ctx context.Context, uuids []string, at time.Time) ([]plugins.VMState, error) {
	return s.lin.StatesAt(ctx, uuids, at)
}

// Records implements plugins.Lineage.
func (s *Service) Records(ctx context.Context, q plugins.RecordQuery) ([]record.Record, error) {
	return s.lin.Records(ctx, q)
}

// AlertedVMs implements plugins.Lineage: alerts stored and alerts being
// enriched right now.
func (s *Service) AlertedVMs(ctx context.Context, uuids []string, since, until time.Time) ([]plugins.AlertedVM, error) {
	return s.log.alertedVMs(ctx, uuids, since, until)
}

// match ties the alert to VMs as they were at its time.
func (s *Service) match(ctx context.Context, a *Alert) ([]plugins.AlertVM, []string, error) {
	var out []plugins.AlertVM
	var notes []string
	seen := map[string]bool{}
	for _, f := range []struct{ kind, field string }{
		{backend.KindUUID, "cloud.instance.id"},
		{backend.KindName, "host.name"}, {backend.KindIP, "host.ip"}, {backend.KindIP, "source.ip"},
		{backend.KindIP, "destination.ip"}, {backend.KindMAC, "host.mac"},
	} {
		for _, val := range lookupStrings(a.Doc, f.field) {
			key := strings.TrimSpace(val)
			switch f.kind {
			case backend.KindMAC:
				key = normalizeMAC(val)
			case backend.KindUUID:
				key = strings.ToLower(key)
			}
			uu, err := s.lin.FindVMs(ctx, f.kind, key, a.Time)
			if err != nil {
				return nil, nil, fmt.Errorf("match %s: %w", f.field, err)
			}
			switch {
			case len(uu) == 0 && f.kind == backend.KindUUID:
				notes = append(notes, fmt.Sprintf("cloud.instance.id %s is not a VM in the lineage store", val))
			case len(uu) > 1:
				notes = append(notes, fmt.Sprintf("%s %s was held by %d VMs at the alert's time; all are taken", f.field, val, len(uu)))
			}
			for _, u := range uu {
				if !seen[u] {
					seen[u] = true
					out = append(out, plugins.AlertVM{UUID: u, Field: f.field, Value: val})
				}
			}
		}
	}
	return out, notes, nil
}

// msTime reads the store's Unix milliseconds; 0 is the zero time, as in
// package lineage.
func msTime(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
