package logsource

import (
	"io"
	"os"

	"github.com/vmlineage/vmlineage/internal/logtail"
)

// File identity is shared with the audit.log source: internal/logtail.
// The persisted JSON of identity is logtail.Identity's (unchanged).

const (
	fpBytes = logtail.FPBytes
	minFP   = logtail.MinFP
)

type identity = logtail.Identity

func statID(fi os.FileInfo) (dev, ino uint64) { return logtail.StatID(fi) }

func fingerprint(r io.Reader, n int) (int, string) { return logtail.Fingerprint(r, n) }

func openContent(path string) (io.ReadCloser, error) { return logtail.OpenContent(path) }

func sameContent(path string, id identity) bool { return logtail.SameContent(path, id) }

func gzipReader(r io.Reader) (io.Reader, error) { return logtail.GzipReader(r) }
