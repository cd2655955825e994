package logsource

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"strings"
	"syscall"
)

// fpBytes is how much of a file's start identifies it. Inodes are reused
// (a file deleted and another created gets the same number) and change when
// logrotate compresses a file, so identity is the inode plus a hash of the
// first bytes, and a gzip-rotated file is recognised by the hash alone.
const fpBytes = 1024

// minFP is the fewest hashed bytes that identify a file by content alone:
// a syslog line's envelope and header are longer than that, so two files
// with as many equal bytes are copies.
const minFP = 128

// identity names one file's content stream.
type identity struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	FPLen int    `json:"fp_len"` // bytes hashed (less than fpBytes while the file is young)
	FP    string `json:"fp"`
}

func statID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), st.Ino
	}
	return 0, 0
}

// fingerprint hashes the first n bytes of r (fewer if r is shorter) and
// returns how many it hashed.
func fingerprint(r io.Reader, n int) (int, string) {
	buf := make([]byte, n)
	k, _ := io.ReadFull(r, buf)
	sum := sha256.Sum256(buf[:k])
	return k, hex.EncodeToString(sum[:8])
}

// openContent opens path for reading its content: a .gz file is
// decompressed. The returned size is -1 for compressed files.
func openContent(path string) (io.ReadCloser, error) {
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

// sameContent reports whether path starts with the bytes id hashed.
func sameContent(path string, id identity) bool {
	if id.FPLen == 0 {
		return true
	}
	rc, err := openContent(path)
	if err != nil {
		return false
	}
	defer rc.Close()
	n, fp := fingerprint(rc, id.FPLen)
	return n == id.FPLen && fp == id.FP
}

func gzipReader(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
