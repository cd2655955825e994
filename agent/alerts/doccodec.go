package alerts

import (
	_ "embed"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// The alert log stores each alert's documents (as received and as sent)
// as zstd frames, compressed against a dictionary of what alerts and
// vmlineage's enrichment usually say (docdict-v1.json: field names, the
// detectors' phrases). An alert's two documents are about 4 KiB of JSON;
// packed they are about 750 bytes (5.5 times smaller in
// BenchmarkEnrich1MVMs; without the dictionary 2.9 times), so the log
// writes, checkpoints and keeps a fifth of the pages.
//
// Rows written before this are JSON text and are read as they are: a
// JSON document never starts with zstd's magic number (0x28 is '(').
// A frame names its dictionary by id, so a later dictionary gets a new id
// and this one stays for the rows packed with it.

//go:embed docdict-v1.json
var docDictV1 []byte

// docDictV1ID is the id the frames packed with docDictV1 carry. zstd
// leaves ids from 32,768 to 2^31-1 to private use; this one is "vl" 1.
const docDictV1ID = 0x766c0001

// maxDocBytes bounds what a stored document may unpack to (a frame that
// says more is refused, not allocated): far above any alert the intake
// takes.
const maxDocBytes = 64 << 20

var zstdMagic = [4]byte{0x28, 0xb5, 0x2f, 0xfd}

var docCodec = sync.OnceValues(func() (*docCoder, error) {
	// One encoder: only the alert log's writer packs. SpeedFastest packs
	// an alert's documents in about 25 µs; SpeedDefault saves 1% more. A
	// 128 KiB window packs the benchmark's documents as well as the
	// default 8 MiB one, and the encoder keeps 0.8 instead of 4.7 MiB.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<17), zstd.WithEncoderDictRaw(docDictV1ID, docDictV1))
	if err != nil {
		return nil, fmt.Errorf("alerts: document encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(maxDocBytes), zstd.WithDecoderDictRaw(docDictV1ID, docDictV1))
	if err != nil {
		return nil, fmt.Errorf("alerts: document decoder: %w", err)
	}
	return &docCoder{enc: enc, dec: dec}, nil
})

type docCoder struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// packDoc appends doc, packed, to dst.
func packDoc(dst, doc []byte) ([]byte, error) {
	c, err := docCodec()
	if err != nil {
		return dst, err
	}
	return c.enc.EncodeAll(doc, dst), nil
}

// errBadDoc: a stored document that is neither JSON text nor a frame
// this version can unpack.
var errBadDoc = errors.New("stored alert document cannot be unpacked")

// unpackDoc returns the document stored as b: b itself when it is text
// (an older row), else the frame unpacked.
func unpackDoc(b []byte) ([]byte, error) {
	if !isPacked(b) {
		return b, nil
	}
	c, err := docCodec()
	if err != nil {
		return nil, err
	}
	out, err := c.dec.DecodeAll(b, nil)
	if err != nil {
		return nil, fmt.Errorf("%w (%d bytes): %v", errBadDoc, len(b), err)
	}
	return out, nil
}

func isPacked(b []byte) bool {
	return len(b) >= 4 && [4]byte(b[:4]) == zstdMagic
}
