package alerts

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// StoredAlert is one alert as the alert log holds it, its documents
// unpacked: what `vmlineage alerts export` prints, one per line.
type StoredAlert struct {
	Seq      int64     `json:"seq"`
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Received time.Time `json:"received"`
	Source   string    `json:"source,omitempty"`
	Matched  bool      `json:"matched"`
	// VMs: the VMs the alert was tied to, by which of its fields.
	VMs []StoredAlertVM `json:"vms,omitempty"`
	// Alert is the alert as received (ECS JSON; a CEF alert as parsed),
	// Enriched as it went out (absent when its batch was stored before it
	// was enriched and never after).
	Alert    json.RawMessage `json:"alert,omitempty"`
	Enriched json.RawMessage `json:"enriched,omitempty"`
	// Error says why a document could not be read; the other fields are
	// still there.
	Error string `json:"error,omitempty"`
}

// StoredAlertVM is a VM an alert was tied to.
type StoredAlertVM struct {
	UUID  string `json:"vm_uuid"`
	Field string `json:"field,omitempty"`
	Value string `json:"value,omitempty"`
}

// ExportFilter selects stored alerts; zero fields select all.
type ExportFilter struct {
	Since, Until time.Time // alert time in [Since, Until)
	VMUUID       string    // only alerts tied to this VM
	Limit        int       // at most this many, the oldest first
}

// ExportAlerts calls fn with each alert in the alert log at path that f
// selects, in the order they were stored. It only reads: the file may be
// in use by an agent. An alert whose document cannot be unpacked goes to
// fn with Error set; ExportAlerts then returns an error that counts them,
// after the others.
func ExportAlerts(ctx context.Context, path string, f ExportFilter, fn func(StoredAlert) error) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no alert log at %s: %w", path, err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "query_only(1)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return fmt.Errorf("alerts: open %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(2) // the alert query and, inside it, each alert's VMs
	var where []string
	var args []any
	if !f.Since.IsZero() {
		where, args = append(where, "time_ms>=?"), append(args, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		where, args = append(where, "time_ms<?"), append(args, f.Until.UnixMilli())
	}
	if f.VMUUID != "" {
		where, args = append(where, "seq IN (SELECT alert_seq FROM alert_vms WHERE vm_uuid=?)"), append(args, f.VMUUID)
	}
	query := "SELECT seq,id,time_ms,received_ms,source,matched,json,enriched FROM alerts"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq"
	if f.Limit > 0 {
		query += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("alerts: read %s: %w", path, err)
	}
	defer rows.Close()
	vmq, err := db.PrepareContext(ctx, "SELECT vm_uuid,field,value FROM alert_vms WHERE alert_seq=? ORDER BY rowid")
	if err != nil {
		return fmt.Errorf("alerts: read %s: %w", path, err)
	}
	defer vmq.Close()
	bad := 0
	for rows.Next() {
		var a StoredAlert
		var at, recv int64
		var js, enr []byte
		if err := rows.Scan(&a.Seq, &a.ID, &at, &recv, &a.Source, &a.Matched, &js, &enr); err != nil {
			return fmt.Errorf("alerts: read %s: %w", path, err)
		}
		a.Time, a.Received = time.UnixMilli(at).UTC(), time.UnixMilli(recv).UTC()
		var errs []error
		if a.Alert, err = storedJSON(js); err != nil {
			errs = append(errs, fmt.Errorf("alert as received: %w", err))
		}
		if enr != nil {
			if a.Enriched, err = storedJSON(enr); err != nil {
				errs = append(errs, fmt.Errorf("enriched alert: %w", err))
			}
		}
		if len(errs) > 0 {
			bad++
			a.Error = errors.Join(errs...).Error()
		}
		if a.VMs, err = alertVMs(ctx, vmq, a.Seq); err != nil {
			return fmt.Errorf("alerts: read %s: %w", path, err)
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("alerts: read %s: %w", path, err)
	}
	if bad > 0 {
		return fmt.Errorf("alerts: %d stored alerts in %s have a document that cannot be read (their lines carry \"error\")", bad, path)
	}
	return nil
}

// storedJSON unpacks a stored document and checks that it is JSON (it
// goes into the export line as it is).
func storedJSON(b []byte) (json.RawMessage, error) {
	doc, err := unpackDoc(b)
	if err != nil {
		return nil, err
	}
	if !json.Valid(doc) {
		return nil, fmt.Errorf("stored alert document is not JSON (%d bytes)", len(doc))
	}
	return doc, nil
}

func alertVMs(ctx context.Context, q *sql.Stmt, seq int64) ([]StoredAlertVM, error) {
	rows, err := q.QueryContext(ctx, seq)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []StoredAlertVM
	for rows.Next() {
		var v StoredAlertVM
		if err := rows.Scan(&v.UUID, &v.Field, &v.Value); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
