package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats"
	"github.com/vmlineage/vmlineage/formats/cef"
	"github.com/vmlineage/vmlineage/formats/ecs"
)

var t0 = time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)

// chainedStore holds n sealed records and a checkpoint every 10.
func chainedStore(t *testing.T, n int) *lineage.Store {
	t.Helper()
	st, err := lineage.Open(filepath.Join(t.TempDir(), "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		r := &record.Record{ID: record.ID("pool", fmt.Sprintf("%012x", i), 0), PoolUUID: "pool", VMUUID: fmt.Sprintf("vm-%d", i),
			VMName: fmt.Sprintf("web-%02d", i), Activity: record.Clone, ParentVMUUID: "tpl", Start: t0.Add(time.Duration(i) * time.Second),
			End: t0.Add(time.Duration(i)*time.Second + 1500*time.Millisecond), Result: record.Success, Source: record.SourceXAPI,
			Actor: &record.Actor{Name: `EXAMPLE01\vmadmin`, SubjectID: "S-1-5-21-1", ClientIP: "10.0.0.7"}}
		if err := st.Update(ctx, func(tx *lineage.Tx) error { _, err := tx.PutRecord(r); return err }); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			if _, _, err := st.AddCheckpoint(ctx, "periodic", r.End, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	return st
}

// jsonCopy is what a file output with format json holds: records in chain
// order with the checkpoints after the record they name.
func jsonCopy(t *testing.T, st *lineage.Store) []string {
	t.Helper()
	ctx := context.Background()
	recs, err := st.Sealed(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cps, _ := st.Checkpoints(ctx, 0, 1<<62)
	var lines []string
	for _, r := range recs {
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
		for _, cp := range cps {
			if cp.Seq == r.Chain.Seq {
				lines = append(lines, fmt.Sprintf(`{"checkpoint":{"seq":%d,"hash":%q,"at":%q}}`, cp.Seq, cp.Hash, record.FormatTime(cp.At)))
			}
		}
	}
	return lines
}

func fileOf(lines []string) []Input {
	return []Input{{Name: "records.jsonl", R: strings.NewReader(strings.Join(lines, "\n") + "\n")}}
}

func TestFileVerifies(t *testing.T) {
	lines := jsonCopy(t, chainedStore(t, 35))
	res, err := File(fileOf(lines))
	if err != nil || res.Problem != nil {
		t.Fatalf("%+v %v %v", res, err, res.Problem)
	}
	if res.Records != 35 || res.Checkpoints != 3 || res.First != 1 || res.Last != 35 {
		t.Fatalf("%+v", res)
	}
	// A copy whose older part was rotated away still verifies from where it starts.
	res, _ = File(fileOf(lines[20:]))
	if res.Problem != nil || res.First == 1 {
		t.Fatalf("tail of the copy: %+v %v", res, res.Problem)
	}
	// Split across two files.
	res, _ = File([]Input{{"a", strings.NewReader(strings.Join(lines[:12], "\n"))}, {"b", strings.NewReader(strings.Join(lines[12:], "\n"))}})
	if res.Problem != nil || res.Records != 35 {
		t.Fatalf("two files: %+v %v", res, res.Problem)
	}
}

func TestFileNamesAlteredRecord(t *testing.T) {
	lines := jsonCopy(t, chainedStore(t, 20))
	var r record.Record
	json.Unmarshal([]byte(lines[7]), &r)
	lines[7] = strings.Replace(lines[7], `vmadmin`, `someone_else`, 1)
	res, err := File(fileOf(lines))
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Problem; p == nil || p.ID != r.ID || p.Seq != r.Chain.Seq || p.Line != 8 || !strings.Contains(p.What, "altered") {
		t.Fatalf("want record %s (seq %d, line 8) named altered: %+v", r.ID, r.Chain.Seq, p)
	}
}

func TestFileNamesDeletedRecord(t *testing.T) {
	lines := jsonCopy(t, chainedStore(t, 20))
	lines = append(lines[:5:5], lines[6:]...)
	res, _ := File(fileOf(lines))
	if p := res.Problem; p == nil || !strings.Contains(p.What, "missing") || p.Seq != 7 {
		t.Fatalf("want seq 6 missing, reported at seq 7: %+v", p)
	}
}

func TestFileCatchesForgedLinks(t *testing.T) {
	// An attacker who alters a record and recomputes its own hash still
	// breaks the next record's prev.
	lines := jsonCopy(t, chainedStore(t, 10))
	var r record.Record
	json.Unmarshal([]byte(lines[3]), &r)
	r.VMName = "forged"
	r.Chain.Hash = record.ChainHash(r.Chain.Prev, &r)
	b, _ := json.Marshal(r)
	lines[3] = string(b)
	res, _ := File(fileOf(lines))
	if p := res.Problem; p == nil || p.Seq != 5 || !strings.Contains(p.What, "prev") {
		t.Fatalf("want a broken prev at seq 5: %+v", p)
	}
}

func TestFileRejectsJunk(t *testing.T) {
	res, err := File(fileOf([]string{`{"id":"x"`}))
	if err != nil || res.Problem == nil || !strings.Contains(res.Problem.What, "not a JSON line") || res.Problem.Line != 1 {
		t.Fatalf("%+v %v", res.Problem, err)
	}
	res, _ = File(fileOf([]string{`{"id":"0123","pool_uuid":"p","vm_uuid":"v","activity":"start","start":"2024-01-01T00:00:00Z","end":"","result":"success","source":"xapi"}`}))
	if res.Problem == nil || !strings.Contains(res.Problem.What, "no chain link") {
		t.Fatalf("a record without its link must be named: %+v", res.Problem)
	}
}

// TestLinksFromEveryFormat: the links a SIEM holds, in ECS, CEF (bare and
// inside syslog lines) and JSON, are found and match the store; after the
// store is altered, the first altered record is named.
func TestLinksFromEveryFormat(t *testing.T) {
	ctx := context.Background()
	st := chainedStore(t, 30)
	recs, _ := st.Sealed(ctx, 0, 0)
	cps, _ := st.Checkpoints(ctx, 0, 1<<62)
	var siem bytes.Buffer
	for i := range recs {
		r := &recs[i]
		switch i % 3 {
		case 0:
			siem.Write(ecs.AppendRecord(nil, r, nil))
		case 1:
			siem.WriteString("<134>1 2024-03-01T09:00:00Z mgmt1 vmlineage - - [vmlineage@0 id=\"x\"] ")
			siem.Write(cef.AppendRecord(nil, r, nil))
		case 2:
			b, _ := json.Marshal(r)
			siem.Write(b)
		}
		siem.WriteByte('\n')
	}
	for _, cp := range cps {
		f := formats.Checkpoint{Seq: cp.Seq, Hash: cp.Hash, At: cp.At}
		siem.Write(ecs.AppendCheckpoint(nil, &f, nil))
		siem.WriteByte('\n')
		siem.Write(cef.AppendCheckpoint(nil, &f, nil))
		siem.WriteByte('\n')
	}
	siem.WriteString("some unrelated syslog line\n")
	links, skipped, err := Links(bytes.NewReader(siem.Bytes()))
	if err != nil || len(links) != 30+2*len(cps) || skipped != 1 {
		t.Fatalf("links %d (want %d), skipped %d, %v", len(links), 30+2*len(cps), skipped, err)
	}
	res, err := AgainstStore(ctx, st, "siem.log", links)
	if err != nil || res.Problem != nil || res.Matched != len(links) || res.Checkpoints != 2*len(cps) {
		t.Fatalf("%+v %v %v", res, err, res.Problem)
	}
	// Rewrite record 12 and re-hash the whole chain in the store: the SIEM's
	// copy disagrees, and names where.
	rewrite(t, st, 12)
	res, _ = AgainstStore(ctx, st, "siem.log", links)
	if p := res.Problem; p == nil || p.Seq != 12 || p.ID != recs[11].ID {
		t.Fatalf("want seq 12 (%s) named: %+v", recs[11].ID, p)
	}
	if v, _ := st.VerifyChain(ctx); v.Break == nil {
		t.Fatal("the store's own checkpoints must catch the rewrite too")
	}
}

func rewrite(t *testing.T, st *lineage.Store, seq int64) {
	t.Helper()
	ctx := context.Background()
	db := st.DB()
	db.Exec("UPDATE records SET json=replace(json,'web-12','web-XX'), vm_name='web-XX' WHERE chain_seq=?", seq)
	recs, _ := st.Sealed(ctx, 0, 0)
	prev := record.GenesisHash
	for i := range recs {
		h := record.ChainHash(prev, &recs[i])
		db.Exec("UPDATE records SET chain_prev=?, chain_hash=? WHERE chain_seq=?", prev, h, recs[i].Chain.Seq)
		prev = h
	}
	db.Exec("UPDATE agent_state SET value=? WHERE key=?", fmt.Sprintf("%d %s", len(recs), prev), lineage.KeyChainHead)
}

func FuzzLinks(f *testing.F) {
	f.Add(`{"chain":{"seq":1,"prev":"a","hash":"b"}}`)
	f.Add(`CEF:0|vmlineage|vmlineage|1|chain.checkpoint|Chain checkpoint|1|cn3Label=chainSeq cn3=5 flexString1Label=chainHash flexString1=ab`)
	f.Add(`<13>x {"vmlineage":{"checkpoint":{"seq":3,"hash":"c"}}}`)
	f.Fuzz(func(t *testing.T, s string) {
		links, _, _ := Links(strings.NewReader(s))
		for _, l := range links {
			if l.Line < 1 {
				t.Fatalf("link without line: %+v", l)
			}
		}
	})
}

func FuzzFile(f *testing.F) {
	f.Add(`{"checkpoint":{"seq":1,"hash":"x"}}` + "\n" + `{"id":"a","chain":{"seq":1,"prev":"p","hash":"h"}}`)
	f.Fuzz(func(t *testing.T, s string) {
		res, err := File([]Input{{"f", strings.NewReader(s)}})
		if err == nil && res == nil {
			t.Fatal("no result")
		}
	})
}

// An at-least-once output re-sends an interrupted batch after a crash: the
// repeated lines are the same records and the copy verifies, with the
// repeats counted; a different record at a repeated seq, or a repeat that
// skips or reorders, is still a break.
func TestFileAcceptsAtLeastOnceRepeats(t *testing.T) {
	lines := jsonCopy(t, chainedStore(t, 12))
	// lines: records 1..10, checkpoint(10), records 11..12.
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	// The batch holding records 4..8 was written up to record 6, the agent
	// was killed, and the batch went again from record 4.
	res, err := File(fileOf(cat(lines[:6], lines[3:])))
	if err != nil || res.Problem != nil {
		t.Fatalf("a copy with a re-sent batch: %v %v", err, res.Problem)
	}
	if res.Records != 12 || res.Resent != 3 || res.First != 1 || res.Last != 12 || res.Checkpoints != 1 {
		t.Fatalf("counts: %+v", res)
	}
	// A re-send itself cut short and sent again, across two files.
	res, _ = File([]Input{{"a", strings.NewReader(strings.Join(cat(lines[:6], lines[3:5]), "\n"))}, {"b", strings.NewReader(strings.Join(lines[3:], "\n"))}})
	if res.Problem != nil || res.Records != 12 || res.Resent != 5 {
		t.Fatalf("a re-send repeated: %+v %v", res, res.Problem)
	}
	// A copy that ends inside a repeat (killed again during the re-send).
	if res, _ = File(fileOf(cat(lines[:6], lines[3:5]))); res.Problem != nil || res.Resent != 2 {
		t.Fatalf("a copy ending in a repeat: %+v %v", res, res.Problem)
	}

	// A different record (hashed correctly, linked to the real record
	// before it) at a repeated seq.
	var r record.Record
	json.Unmarshal([]byte(lines[4]), &r)
	r.VMName = "forged"
	r.Chain.Hash = record.ChainHash(r.Chain.Prev, &r)
	b, _ := json.Marshal(r)
	res, _ = File(fileOf(cat(lines[:6], lines[3:4], []string{string(b)}, lines[5:])))
	if p := res.Problem; p == nil || p.Seq != 5 || p.Line != 8 || !strings.Contains(p.What, "different record") {
		t.Fatalf("want a different record at seq 5 named: %+v", p)
	}
	// A reorder: records 1..6, then 5, 4 repeated, then on from 7.
	res, _ = File(fileOf(cat(lines[:6], lines[4:5], lines[3:4], lines[6:])))
	if p := res.Problem; p == nil || p.Seq != 7 || !strings.Contains(p.What, "out of order") {
		t.Fatalf("want the reorder named: %+v", p)
	}
	// A repeat that skips a record.
	res, _ = File(fileOf(cat(lines[:6], lines[3:4], lines[5:])))
	if p := res.Problem; p == nil || p.Seq != 6 || !strings.Contains(p.What, "skips") {
		t.Fatalf("want the skip in the repeat named: %+v", p)
	}
	// A seq out of order with no repeat: still a break.
	res, _ = File(fileOf(cat(lines[:3], lines[4:5], lines[3:4], lines[5:])))
	if p := res.Problem; p == nil || p.Seq != 5 || !strings.Contains(p.What, "missing") {
		t.Fatalf("want the reorder named: %+v", p)
	}
}
