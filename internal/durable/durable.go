// Package durable holds what makes a file system change survive a crash
// or a power loss beyond the file's own fsync.
package durable

import "os"

// SyncDir fsyncs a directory, so that a file created, renamed or removed
// in it survives a power loss (the file's own fsync does not cover its
// directory entry).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
