package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Mark says how recent alerts concern one VM: it alerted, or it is a
// suspect (best score and reason over the alerts). It has the fields of
// agent/webui.Mark, so the UI's AlertSource is a field-by-field copy.
type Mark struct {
	Alerted bool    `json:"alerted,omitempty"`
	Suspect bool    `json:"suspect,omitempty"`
	Score   float64 `json:"score,omitempty"`
	Reason  string  `json:"reason,omitempty"`
}

// Marks returns the marks of the alerts received since since (at most the
// newest limit alerts), keyed by VM uuid. A VM that alerted is not also
// marked suspect.
func (s *Service) Marks(ctx context.Context, since time.Time, limit int) (map[string]Mark, error) {
	if limit <= 0 {
		limit = 1000
	}
	out := map[string]Mark{}
	rows, err := s.db.QueryContext(ctx, "SELECT DISTINCT vm_uuid FROM alert_vms WHERE time_ms>=?", since.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("alert marks: %w", err)
	}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return nil, err
		}
		out[u] = Mark{Alerted: true}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = s.db.QueryContext(ctx, "SELECT enriched FROM alerts WHERE time_ms>=? AND matched=1 AND enriched IS NOT NULL ORDER BY seq DESC LIMIT ?", since.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("alert marks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var stored []byte
		if err := rows.Scan(&stored); err != nil {
			return nil, err
		}
		js, err := unpackDoc(stored)
		if err != nil {
			continue // as one that is not JSON, below
		}
		var doc struct {
			VL struct {
				Suspects []struct {
					UUID   string  `json:"vm_uuid"`
					Score  float64 `json:"score"`
					Reason string  `json:"reason"`
				} `json:"suspects"`
			} `json:"vmlineage"`
		}
		if json.Unmarshal(js, &doc) != nil {
			continue // a stored copy we cannot read only loses its marks
		}
		for _, sus := range doc.VL.Suspects {
			m := out[sus.UUID]
			if m.Alerted || (m.Suspect && m.Score >= sus.Score) {
				continue
			}
			out[sus.UUID] = Mark{Suspect: true, Score: sus.Score, Reason: sus.Reason}
		}
	}
	return out, rows.Err()
}
