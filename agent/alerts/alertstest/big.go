package alertstest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// Big describes the benchmark store: Families families of FamilySize VMs
// (a root and its clones). In every family the root is destroyed, the
// last two clones are halted and the others run, each with its own IP.
// Records as the tracer would have written them: the root's create and
// destroy, each clone's clone record, the halted clones' shutdowns; in
// every tenth family clone 1 was snapshotted and reverted to it (so
// rollback has something to find).
type Big struct {
	Families   int
	FamilySize int
}

// BigT0 is when the benchmark families were made.
var BigT0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// UUID of member m (0 = root) of family f.
func (b Big) UUID(f, m int) string {
	return fmt.Sprintf("%08x-%04x-4000-8000-%012x", f, m, f*b.FamilySize+m)
}

// IP of member m of family f (clones only).
func (b Big) IP(f, m int) string {
	n := f*b.FamilySize + m
	return fmt.Sprintf("10.%d.%d.%d", (n>>16)&255, (n>>8)&255, n&255)
}

// Name of member m of family f.
func (b Big) Name(f, m int) string { return fmt.Sprintf("fam%d-vm%d", f, m) }

// Snapshot is the uuid of the snapshot of clone 1 in families f%10 == 0.
func (b Big) Snapshot(f int) string {
	return fmt.Sprintf("%08x-ffff-4000-8000-%012x", f, f)
}

// BigPool is the benchmark store's pool.
const BigPool = "bench-pool"

func (b Big) record(f, m, n int, a record.Activity, vm, name, parent string, at time.Time) *record.Record {
	return &record.Record{ID: record.ID(BigPool, fmt.Sprintf("f%d-m%d-%d", f, m, n), 0), PoolUUID: BigPool, VMUUID: vm, VMName: name,
		ParentVMUUID: parent, Activity: a, Operation: "VM." + string(a), Start: at, End: at.Add(2 * time.Second), Result: record.Success,
		Source: record.SourceXAPI, TaskID: fmt.Sprintf("f%d-m%d-%d", f, m, n)}
}

// Open returns a private copy of the benchmark store, building it once
// under the user's cache directory (it takes minutes; the copy seconds).
func (b Big) Open(tb testing.TB) *lineage.Store {
	tb.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	path := filepath.Join(cache, "vmlineage-bench", fmt.Sprintf("alerts-%dx%d-v2.db", b.Families, b.FamilySize))
	if _, err := os.Stat(path); err != nil {
		start := time.Now()
		if err := b.build(path); err != nil {
			tb.Fatal(err)
		}
		tb.Logf("built %s (%d VMs) in %s", path, b.Families*b.FamilySize, time.Since(start).Round(time.Second))
	}
	// Bring the cached file to the current schema once (a new index would
	// otherwise be built in every copy).
	if st, err := lineage.Open(path); err != nil {
		tb.Fatal(err)
	} else {
		st.DB().Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		st.Close()
	}
	dst := filepath.Join(tb.TempDir(), "lineage.db")
	if err := CopyFile(path, dst); err != nil {
		tb.Fatal(err)
	}
	st, err := lineage.Open(dst)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

func (b Big) build(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".building"
	os.Remove(tmp)
	os.Remove(tmp + "-wal")
	os.Remove(tmp + "-shm")
	st, err := lineage.Open(tmp)
	if err != nil {
		return err
	}
	put := func(tx *lineage.Tx, r *record.Record) error {
		_, err := tx.PutRecord(r)
		return err
	}
	// One transaction per 1000 families: the tracer's batches are of that size.
	for f0 := 0; f0 < b.Families && err == nil; f0 += 1000 {
		err = st.Update(context.Background(), func(tx *lineage.Tx) error {
			for f := f0; f < min(f0+1000, b.Families); f++ {
				if err := b.family(tx, f, put); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		st.Close()
		return err
	}
	if _, err := st.DB().Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		st.Close()
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (b Big) family(tx *lineage.Tx, f int, put func(*lineage.Tx, *record.Record) error) error {
	for m := 0; m < b.FamilySize; m++ {
		u := b.UUID(f, m)
		at := BigT0.Add(time.Duration(m) * time.Minute)
		v := &lineage.VM{UUID: u, PoolUUID: BigPool, Name: b.Name(f, m), FirstSeen: at, LastSeen: at, PowerState: "Running"}
		if m > 0 {
			v.ParentUUID, v.ParentVia = b.UUID(f, 0), "clone"
		}
		if m >= b.FamilySize-2 {
			v.PowerState = "Halted"
		}
		if err := tx.PutVM(v); err != nil {
			return err
		}
		if err := tx.SetState(u, v.PowerState, "", at); err != nil {
			return err
		}
		if err := tx.SetAttrs(u, lineage.AttrName, []string{v.Name}, at); err != nil {
			return err
		}
		if m > 0 {
			if err := tx.SetAttrs(u, lineage.AttrIP, []string{b.IP(f, m)}, at); err != nil {
				return err
			}
		}
	}
	root, rootName := b.UUID(f, 0), b.Name(f, 0)
	if err := put(tx, b.record(f, 0, 0, record.Create, root, rootName, "", BigT0)); err != nil {
		return err
	}
	for m := 1; m < b.FamilySize; m++ {
		if err := put(tx, b.record(f, m, 0, record.Clone, b.UUID(f, m), b.Name(f, m), root, BigT0.Add(time.Duration(m)*time.Minute))); err != nil {
			return err
		}
		if m >= b.FamilySize-2 {
			if err := put(tx, b.record(f, m, 1, record.Shutdown, b.UUID(f, m), b.Name(f, m), "", BigT0.Add(30*time.Minute))); err != nil {
				return err
			}
		}
	}
	if f%10 == 0 && b.FamilySize > 1 {
		snap, vm1 := b.Snapshot(f), b.UUID(f, 1)
		at := BigT0.Add(20 * time.Minute)
		if err := tx.PutVM(&lineage.VM{UUID: snap, PoolUUID: BigPool, Name: b.Name(f, 1) + " before patch", ParentUUID: vm1,
			ParentVia: "snapshot", Kind: lineage.KindSnapshot, FirstSeen: at, LastSeen: at, PowerState: "Halted"}); err != nil {
			return err
		}
		if err := tx.SetState(snap, "Halted", "", at); err != nil {
			return err
		}
		if err := put(tx, b.record(f, 1, 2, record.Snapshot, snap, b.Name(f, 1)+" before patch", vm1, at)); err != nil {
			return err
		}
		rv := b.record(f, 1, 3, record.Revert, vm1, b.Name(f, 1), "", BigT0.Add(90*time.Minute))
		rv.SnapshotUUID = snap
		if err := put(tx, rv); err != nil {
			return err
		}
	}
	if err := put(tx, b.record(f, 0, 1, record.Destroy, root, rootName, "", BigT0.Add(time.Hour))); err != nil {
		return err
	}
	return tx.MarkDestroyed(root, BigT0.Add(time.Hour))
}

// CopyFile copies src to dst and syncs the copy.
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	// On disk before the measuring starts: otherwise the first WAL
	// checkpoint's fsync (or the kernel's writeback, half a minute on)
	// writes the whole 2 GB copy in the middle of it, at 500 MB/s with
	// the machine in I/O wait (seen: p99 0.4-1.5 s, 24-69 ms without).
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
