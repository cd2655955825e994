// Package logtail follows log files across rotation (rename, copytruncate,
// gzip generations) by polling, and names file contents so that a restart
// finds where it stopped. It is the generic part of tailing that the
// xensource.log source (agent/logsource) and the RBAC audit.log source
// (agent/audit) share.
package logtail

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"strings"
	"syscall"
)

// FPBytes is how much of a file's start identifies it. Inodes are reused
// (a file deleted and another created gets the same number) and change when
// logrotate compresses a file, so identity is the inode plus a hash of the
// first bytes, and a gzip-rotated file is recognised by the hash alone.
const FPBytes = 1024

// MinFP is the fewest hashed bytes that identify a file by content alone:
// a syslog line's envelope and header are longer than that, so two files
// with as many equal bytes are copies.
const MinFP = 128

// Identity names one file's content stream. Its JSON form is persisted.
type Identity struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	FPLen int    `json:"fp_len"` // bytes hashed (less than FPBytes while the file is young)
	FP    string `json:"fp"`
}

// StatID returns a file's device and inode (0, 0 where the platform has none).
func StatID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), st.Ino
	}
	return 0, 0
}

// Fingerprint hashes the first n bytes of r (fewer if r is shorter) and
// returns how many it hashed.
func Fingerprint(r io.Reader, n int) (int, string) {
	buf := make([]byte, n)
	k, _ := io.ReadFull(r, buf)
	sum := sha256.Sum256(buf[:k])
	return k, hex.EncodeToString(sum[:8])
}

// OpenContent opens path for reading its content: a .gz file is
// decompressed.
func OpenContent(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, ".gz") {
		return f, nil
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// SameContent reports whether path starts with the bytes id hashed.
func SameContent(path string, id Identity) bool {
	if id.FPLen == 0 {
		return true
	}
	rc, err := OpenContent(path)
	if err != nil {
		return false
	}
	defer rc.Close()
	n, fp := Fingerprint(rc, id.FPLen)
	return n == id.FPLen && fp == id.FP
}

// GzipReader decompresses r.
func GzipReader(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
