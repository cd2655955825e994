package alerts

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// An enriched alert as vmlineage writes it (one suspect less than the
// benchmark's average), with names the dictionary does not hold.
const sampleEnriched = `{"@timestamp":"2025-06-11T14:02:31.117Z","event":{"id":"9f1c2e","kind":"alert","severity":7},"rule":{"name":"Cobalt Strike default named pipe"},"host":{"name":"payroll-db-02"},"threat":{"enrichments":[{"indicator":{"description":"host.name matched VM payroll-db-02 (5c1d9a47-8e2b-4f0a-9c3d-1e2f3a4b5c6d) as it was at 2025-06-11T14:02:31.117Z; lineage suspects: 2, first payroll-db-07","name":"payroll-db-02","provider":"vmlineage","type":"software"},"matched":{"atomic":"payroll-db-02","field":"host.name","id":"5c1d9a47-8e2b-4f0a-9c3d-1e2f3a4b5c6d","occurred":"2025-06-11T14:02:31.117Z","type":"vmlineage_vm_match"}}]},"vmlineage":{"matched":true,"vms":[{"vm_uuid":"5c1d9a47-8e2b-4f0a-9c3d-1e2f3a4b5c6d","name":"payroll-db-02","matched_field":"host.name","matched_value":"payroll-db-02","power_state":"Running"}],"common_ancestor":{"vm_uuid":"0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d","name":"payroll-gold","kind":"template","power_state":"Halted","destroyed":false},"suspects":[{"vm_uuid":"7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9","vm_name":"payroll-db-07","score":0.89,"reason":"payroll-db-07 descends from payroll-gold, the nearest common ancestor of payroll-db-02, payroll-db-03, which alerted within 24h0m0s; it has not alerted: halted, so no IDS or AV sensor can see it","power_state":"Halted","destroyed":false,"detector":"lineage-suspects"},{"vm_uuid":"1f2e3d4c-5b6a-4798-8877-665544332211","vm_name":"payroll-db-04","score":0.59,"reason":"payroll-db-04 descends from payroll-gold, the nearest common ancestor of payroll-db-02, payroll-db-03, which alerted within 24h0m0s; it has not alerted: running, but silent","power_state":"Running","destroyed":false,"detector":"lineage-suspects"}],"alert_id":"9f1c2e","enriched_at":"2025-06-11T14:02:31.121Z"}}`

// A document packs to a frame with the dictionary's id, several times
// smaller, and unpacks to the same bytes; a document stored as text by an
// earlier version reads as it is.
func TestPackDoc(t *testing.T) {
	packed, err := packDoc(nil, []byte(sampleEnriched))
	if err != nil {
		t.Fatal(err)
	}
	if !isPacked(packed) {
		t.Fatalf("packed document does not start with zstd's magic: % x", packed[:4])
	}
	var h zstd.Header
	if err := h.Decode(packed); err != nil || h.DictionaryID != docDictV1ID {
		t.Fatalf("frame header: %+v %v, want dictionary %#x", h, err, docDictV1ID)
	}
	if ratio := float64(len(sampleEnriched)) / float64(len(packed)); ratio < 3 {
		t.Errorf("%d bytes packed to %d (%.1f times smaller), want at least 3", len(sampleEnriched), len(packed), ratio)
	}
	t.Logf("%d bytes packed to %d", len(sampleEnriched), len(packed))
	got, err := unpackDoc(packed)
	if err != nil || string(got) != sampleEnriched {
		t.Fatalf("unpacked %q, %v", got, err)
	}
	// Appends to dst, as its name says.
	two, err := packDoc(append([]byte(nil), packed...), []byte(`{}`))
	if err != nil || !bytes.Equal(two[:len(packed)], packed) {
		t.Fatalf("packDoc did not append: %v", err)
	}
	for _, text := range []string{`{"a":1}`, ` {"a":1}`, `{}`, ``} {
		if got, err := unpackDoc([]byte(text)); err != nil || string(got) != text {
			t.Errorf("text %q read as %q, %v", text, got, err)
		}
	}
}

// What cannot be unpacked says so, with its size: a damaged frame, one
// packed with a dictionary this version does not know, one that would
// unpack beyond maxDocBytes.
func TestUnpackDocRefuses(t *testing.T) {
	packed, err := packDoc(nil, []byte(sampleEnriched))
	if err != nil {
		t.Fatal(err)
	}
	damaged := append([]byte(nil), packed...)
	for i := len(damaged) / 2; i < len(damaged); i++ {
		damaged[i] ^= 0x5a
	}
	otherDict, err := zstd.NewWriter(nil, zstd.WithEncoderDictRaw(docDictV1ID+1, []byte(`{"other":"dictionary"}`)))
	if err != nil {
		t.Fatal(err)
	}
	unknown := otherDict.EncodeAll([]byte(sampleEnriched), nil)
	plain, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	huge := plain.EncodeAll(make([]byte, maxDocBytes+1), nil)
	for name, b := range map[string][]byte{"damaged": damaged, "unknown dictionary": unknown, "too large": huge, "truncated": packed[:len(packed)-5]} {
		_, err := unpackDoc(b)
		if !errors.Is(err, errBadDoc) || !strings.Contains(err.Error(), fmt.Sprintf("(%d bytes)", len(b))) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzUnpackDoc: stored bytes of any kind either unpack or fail with
// errBadDoc; never a panic or an allocation beyond maxDocBytes.
func FuzzUnpackDoc(f *testing.F) {
	packed, err := packDoc(nil, []byte(sampleEnriched))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(packed)
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0xde, 0xad})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := unpackDoc(b)
		if err != nil {
			if !errors.Is(err, errBadDoc) {
				t.Fatalf("error not errBadDoc: %v", err)
			}
			return
		}
		if len(out) > maxDocBytes {
			t.Fatalf("unpacked %d bytes", len(out))
		}
	})
}

// Whatever is packed unpacks to itself: random bytes and random
// edits of a real document, up to 64 KiB. (A fuzz target for this ran at
// a few inputs a second under the fuzzer's instrumentation of zstd.)
func TestPackDocRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	var buf []byte
	for i := 0; i < 3000; i++ {
		var doc []byte
		if i%2 == 0 {
			doc = make([]byte, r.IntN(1<<r.IntN(17)))
			for k := range doc {
				doc[k] = byte(r.IntN(256))
			}
		} else {
			doc = []byte(strings.Repeat(sampleEnriched, 1+r.IntN(30)))
			for range r.IntN(50) {
				doc[r.IntN(len(doc))] = byte(r.IntN(256))
			}
			doc = doc[:r.IntN(len(doc)+1)]
		}
		var err error
		if buf, err = packDoc(buf[:0], doc); err != nil {
			t.Fatal(err)
		}
		got, err := unpackDoc(buf)
		if err != nil || !bytes.Equal(got, doc) {
			t.Fatalf("document %d (%d bytes) came back as %d bytes, %v", i, len(doc), len(got), err)
		}
	}
}
