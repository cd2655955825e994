package alerts

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmlineage/vmlineage/agent/lineage"
)

// AlertsPath is the alert log's file for a lineage store at storePath:
// alerts.db beside lineage.db (<name>-alerts.db beside any other name).
//
// The alert log is a file of its own because SQLite discards a
// connection's whole page cache whenever another connection commits to
// the file: alerts written into the lineage store every millisecond or
// two left enrichment's readers with cold caches on every query, and made
// alert writes queue behind the tracer's large transactions.
func AlertsPath(storePath string) string {
	dir, base := filepath.Split(storePath)
	if base == "lineage.db" {
		return filepath.Join(dir, "alerts.db")
	}
	ext := filepath.Ext(base)
	return filepath.Join(dir, strings.TrimSuffix(base, ext)+"-alerts"+ext)
}

// openAlertDB opens (creating when missing) the alert log at path.
func openAlertDB(ctx context.Context, path string) (*sql.DB, error) {
	if path == "" {
		return nil, errors.New("alerts: empty alert log path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("alerts: create directory of %s: %w", path, err)
	}
	if err := createAlertDB(ctx, path); err != nil {
		return nil, err
	}
	q := url.Values{}
	// As the lineage store: WAL, and synchronous=NORMAL survives a killed
	// process without losing a committed transaction.
	for _, p := range []string{"journal_mode(WAL)", "synchronous(NORMAL)", "busy_timeout(10000)", "temp_store(MEMORY)", "cache_size(-256)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("alerts: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	if _, err := db.ExecContext(ctx, alertSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("alerts: %s is not an alert log: %w", path, err)
	}
	if err := addRowidColumn(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("alerts: upgrade %s: %w", path, err)
	}
	return db, nil
}

// alertPageSize is the page size of an alert log created new: SQLite's
// default. Logs created from 2026-12-03 until the documents were packed
// have 16 KiB pages, chosen when an enriched alert was about 3 KiB of
// JSON and took a 4 KiB page of its own; packed (doccodec.go) an alert's
// row is about 750 bytes, and every commit writes each index page it
// changed whole, at random places in both indexes. Enrich1MVMs, six
// alternating pairs of packed logs, 4 against 16 KiB pages: the host
// writes 8.3 instead of 13.1 KiB per alert (0.63 times), reads 0.90 times
// as much, makes 1.09 times the syscalls at the same CPU, and the log and
// its WAL take 0.60 times the disk at the end of the run (the log alone,
// 30,000 alerts: 1,104 against 1,028 bytes per alert); p99 0.95 times
// (95% interval 0.78-1.14). A log
// keeps the page size it was created with (changing it means rewriting
// the file).
const alertPageSize = 4096

// createAlertDB creates the alert log at path with alertPageSize pages
// when there is no file yet. The page size must be set before anything
// is written; the driver runs its _pragma settings sorted by name, which
// puts journal_mode (whose switch to WAL writes the first page) before
// page_size, so this takes a connection of its own.
func createAlertDB(ctx context.Context, path string) error {
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return nil // there, or not readable: the real open says why
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("alerts: create %s: %w", path, err)
	}
	defer db.Close()
	// A second process creating it at the same time is harmless: the page
	// size of a file already written is left as it is.
	if _, err := db.ExecContext(ctx, fmt.Sprintf("PRAGMA page_size=%d; PRAGMA journal_mode=WAL", alertPageSize)); err != nil {
		return fmt.Errorf("alerts: create %s: %w", path, err)
	}
	return nil
}

// migrateFromStore moves the alerts an earlier vmlineage kept inside the
// lineage store into the alert log, then drops them from the store. Every
// step can be repeated: a crash half-way is finished at the next start.
func migrateFromStore(ctx context.Context, adb *sql.DB, st *lineage.Store) error {
	var n int
	if err := st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name IN ('alerts','alert_vms')").Scan(&n); err != nil || n == 0 {
		return err
	}
	conn, err := adb.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "ATTACH DATABASE ? AS old", "file:"+st.Path()+"?mode=ro"); err != nil {
		return fmt.Errorf("alerts: attach %s: %w", st.Path(), err)
	}
	defer conn.ExecContext(context.Background(), "DETACH DATABASE old")
	if n == 2 {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		for _, q := range []string{
			"CREATE TEMP TABLE moved AS SELECT seq, id FROM old.alerts WHERE id NOT IN (SELECT id FROM main.alerts)",
			`INSERT INTO main.alerts(id,time_ms,received_ms,source,matched,json,enriched)
			  SELECT id,time_ms,received_ms,source,matched,json,enriched FROM old.alerts WHERE seq IN (SELECT seq FROM moved) ORDER BY seq`,
			`INSERT INTO main.alert_vms(alert_seq,vm_uuid,time_ms,field,value)
			  SELECT n.seq, av.vm_uuid, av.time_ms, av.field, av.value FROM old.alert_vms av
			  JOIN moved m ON m.seq=av.alert_seq JOIN main.alerts n ON n.id=m.id`,
			"DROP TABLE temp.moved",
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("alerts: move alerts out of the lineage store: %w", err)
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	if _, err := conn.ExecContext(ctx, "DETACH DATABASE old"); err != nil {
		return err
	}
	if _, err := st.DB().ExecContext(ctx, "DROP TABLE IF EXISTS alert_vms; DROP TABLE IF EXISTS alerts"); err != nil {
		return fmt.Errorf("alerts: drop the old alert tables from the lineage store: %w", err)
	}
	return nil
}

// addRowidColumn adds alert_log_state.vm_rowid to a log made before it
// (alertLogStateRowid). Another process may add it at the same time.
func addRowidColumn(ctx context.Context, db *sql.DB) error {
	has := func() (bool, error) {
		var n int
		err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM pragma_table_info('alert_log_state') WHERE name='vm_rowid'").Scan(&n)
		return n > 0, err
	}
	if ok, err := has(); err != nil || ok {
		return err
	}
	if _, err := db.ExecContext(ctx, alertLogStateRowid); err != nil {
		if ok, err2 := has(); err2 == nil && ok {
			return nil // the other process's
		}
		return err
	}
	return nil
}
