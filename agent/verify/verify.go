// Package verify checks vmlineage's hash chain outside the store: a
// JSON-lines copy of the records (a file output with format json), and the
// links and checkpoints a SIEM holds (ECS documents, CEF lines, JSON lines)
// against the store. The store checks itself (lineage.Store.VerifyChain).
package verify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats/cef"
)

// MaxLine bounds one line of a checked file.
const MaxLine = 4 << 20

// hashWindow is how many of the last links File keeps to compare repeats
// and checkpoints with (a few MiB).
const hashWindow = 1 << 15

// Problem is the first place a file does not hold.
type Problem struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Seq  int64  `json:"seq,omitempty"`
	ID   string `json:"id,omitempty"`
	What string `json:"problem"`
}

func (p *Problem) Error() string {
	s := fmt.Sprintf("%s:%d", p.File, p.Line)
	if p.Seq > 0 {
		s += fmt.Sprintf(": chain seq %d", p.Seq)
	}
	if p.ID != "" {
		s += ", record " + p.ID
	}
	return s + ": " + p.What
}

// FileResult is what File found.
type FileResult struct {
	Records     int64 `json:"records"`     // records whose links verified
	Checkpoints int   `json:"checkpoints"` // checkpoint lines matched
	First       int64 `json:"first_seq"`   // chain seqs covered
	Last        int64 `json:"last_seq"`
	Skipped     int   `json:"skipped"` // lines that are neither (blank)
	// Resent counts record lines that repeat records already verified: an
	// at-least-once output sends a batch interrupted by a crash again.
	Resent  int64    `json:"resent"`
	Problem *Problem `json:"break,omitempty"`
}

// Input is one file to read, in chain order (rotated files oldest first).
type Input struct {
	Name string
	R    io.Reader
}

// File checks a JSON-lines copy of the chain (`records --format json`, a
// file output with format json): every record's hash must be its content's
// (record.ChainHash), each prev the hash of the record before, sequence
// numbers without a gap, and every checkpoint line must name the hash of
// the record at its seq. The copy may start anywhere in the chain (older
// files rotated away): its first record's prev is taken on trust, and said.
//
// Outputs deliver at least once: after a crash the lines of an interrupted
// batch stay and the batch is written again, so a run of records already
// seen may follow. Such a run is accepted (and counted in Resent) when it
// is the same records: each one hashes to its link, links to the one
// before it, matches the hash already seen at its seq (for the last
// hashWindow seqs), and the run, on reaching the last seq seen before it,
// ends on the same hash (which, the links being hashes, vouches for every
// record of the run). A different record at a seq already seen, or a run
// that skips or reorders, is a break.
func File(inputs []Input) (*FileResult, error) {
	res := &FileResult{}
	var prevSeq int64
	var prevHash string
	// A re-sent run in progress: the seq and hash of its last record, and
	// how many of its records had no hash left in hashAt to compare with.
	var resend *repeat
	hashAt := map[int64]string{} // what checkpoints and re-sends can still name: the last hashWindow
	type cpLine struct {
		file string
		line int
		seq  int64
		hash string
	}
	var pending []cpLine
	// check compares the pending checkpoints up to seq with the hashes seen.
	check := func(upTo int64) *Problem {
		keep := pending[:0]
		for _, p := range pending {
			switch {
			case p.seq > upTo:
				keep = append(keep, p)
			case p.seq < res.First || p.seq == 0:
				// Before this copy begins: nothing here to compare with.
			default:
				if h := hashAt[p.seq]; h != p.hash {
					return &Problem{File: p.file, Line: p.line, Seq: p.seq, What: fmt.Sprintf("checkpoint says hash %s, the record at that seq has %q", p.hash, h)}
				}
				res.Checkpoints++
			}
		}
		pending = keep
		return nil
	}
	for _, in := range inputs {
		sc := bufio.NewScanner(in.R)
		sc.Buffer(make([]byte, 64<<10), MaxLine)
		n := 0
		for sc.Scan() {
			n++
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				res.Skipped++
				continue
			}
			fail := func(seq int64, id, what string) (*FileResult, error) {
				res.Problem = &Problem{File: in.Name, Line: n, Seq: seq, ID: id, What: what}
				return res, nil
			}
			var probe struct {
				Checkpoint *struct {
					Seq  int64  `json:"seq"`
					Hash string `json:"hash"`
				} `json:"checkpoint"`
				Chain *record.Chain `json:"chain"`
			}
			if err := json.Unmarshal(line, &probe); err != nil {
				return fail(0, "", "not a JSON line: "+err.Error())
			}
			if cp := probe.Checkpoint; cp != nil {
				pending = append(pending, cpLine{in.Name, n, cp.Seq, cp.Hash})
				continue
			}
			var r record.Record
			if err := json.Unmarshal(line, &r); err != nil {
				return fail(0, "", "not a record: "+err.Error())
			}
			c := r.Chain
			if c == nil {
				return fail(0, r.ID, "the record carries no chain link (was the output's format json?)")
			}
			if res.Records > 0 && (c.Seq <= prevSeq || resend != nil) {
				// A repeat of records already verified (see above).
				last := prevSeq
				if resend != nil {
					last = resend.seq
				}
				switch {
				case c.Seq < res.First:
					return fail(c.Seq, r.ID, fmt.Sprintf("seq %d after seq %d, before the copy's first record (seq %d): out of order", c.Seq, last, res.First))
				case c.Seq > prevSeq:
					return fail(c.Seq, r.ID, fmt.Sprintf("seq %d after the repeated seq %d: the repeat of seq %d to %d stops short, out of order", c.Seq, last, last+1, prevSeq))
				case resend != nil && c.Seq == resend.seq+1:
					if c.Prev != resend.hash {
						return fail(c.Seq, r.ID, fmt.Sprintf("repeated record: prev is %s, but the record before has hash %s", c.Prev, resend.hash))
					}
				case resend != nil && c.Seq > resend.seq+1:
					return fail(c.Seq, r.ID, fmt.Sprintf("seq %d after the repeated seq %d: the repeat skips seq %d to %d, out of order", c.Seq, resend.seq, resend.seq+1, c.Seq-1))
				case resend != nil && resend.unmatched > 0:
					return fail(c.Seq, r.ID, fmt.Sprintf("seq %d after the repeated seq %d: out of order (the repeat before it never rejoined the chain at seq %d)", c.Seq, resend.seq, prevSeq))
				default:
					// A run starts (again, when a re-send was itself cut short).
					if h, ok := hashAt[c.Seq-1]; ok && c.Prev != h {
						return fail(c.Seq, r.ID, fmt.Sprintf("repeated seq %d: prev is %s, but the record at seq %d has hash %s", c.Seq, c.Prev, c.Seq-1, h))
					}
					resend = &repeat{file: in.Name, line: n}
				}
				if h := record.ChainHash(c.Prev, &r); h != c.Hash {
					return fail(c.Seq, r.ID, fmt.Sprintf("altered: its content hashes to %s, its link says %s", h, c.Hash))
				}
				if h, ok := hashAt[c.Seq]; ok && h != c.Hash {
					return fail(c.Seq, r.ID, fmt.Sprintf("a different record at seq %d: hash %s, the record already seen there has %s (altered or out of order)", c.Seq, c.Hash, h))
				} else if !ok {
					resend.unmatched++
				}
				resend.seq, resend.hash = c.Seq, c.Hash
				res.Resent++
				if c.Seq == prevSeq {
					if c.Hash != prevHash {
						return fail(c.Seq, r.ID, fmt.Sprintf("a different record at seq %d: the repeat ends on hash %s, the first copy on %s", c.Seq, c.Hash, prevHash))
					}
					resend = nil // rejoined: the chain goes on from prevSeq
				}
				continue
			}
			if res.Records == 0 {
				res.First = c.Seq
			} else if c.Seq != prevSeq+1 {
				return fail(c.Seq, r.ID, fmt.Sprintf("missing: chain seq %d to %d are not in the file (deleted?)", prevSeq+1, c.Seq-1))
			} else if c.Prev != prevHash {
				return fail(c.Seq, r.ID, fmt.Sprintf("prev is %s, but the record before has hash %s", c.Prev, prevHash))
			}
			if h := record.ChainHash(c.Prev, &r); h != c.Hash {
				return fail(c.Seq, r.ID, fmt.Sprintf("altered: its content hashes to %s, its link says %s", h, c.Hash))
			}
			prevSeq, prevHash = c.Seq, c.Hash
			res.Records++
			res.Last = c.Seq
			hashAt[c.Seq] = c.Hash
			// Checkpoints come after the record they name.
			if res.Problem = check(c.Seq); res.Problem != nil {
				return res, nil
			}
			if len(hashAt) > 2*hashWindow {
				for s := range hashAt {
					if s <= c.Seq-hashWindow {
						delete(hashAt, s)
					}
				}
			}
		}
		if err := sc.Err(); err != nil {
			return res, fmt.Errorf("%s: line %d: %w", in.Name, n+1, err)
		}
	}
	if resend != nil && resend.unmatched > 0 {
		// A repeat cut short (a crash during the re-send) is vouched for
		// only by the hashes still at hand.
		res.Problem = &Problem{File: resend.file, Line: resend.line, Seq: resend.seq,
			What: fmt.Sprintf("the copy ends in a repeat (up to seq %d) of records too old to compare with their first copy, and it never rejoins the chain at seq %d", resend.seq, prevSeq)}
		return res, nil
	}
	if res.Problem = check(res.Last); res.Problem != nil {
		return res, nil
	}
	for _, p := range pending {
		res.Problem = &Problem{File: p.file, Line: p.line, Seq: p.seq, What: fmt.Sprintf("checkpoint names seq %d, but the records end at seq %d (records cut off the end?)", p.seq, res.Last)}
		return res, nil
	}
	return res, nil
}

// repeat is a run of re-sent records File is following: where it started,
// its last record, and how many of its records had no hash left to
// compare with.
type repeat struct {
	file      string
	line      int
	seq       int64
	hash      string
	unmatched int
}

// Link is a (seq, hash) pair a copy of the chain holds: a checkpoint, or a
// record's own link.
type Link struct {
	Seq        int64  `json:"seq"`
	Hash       string `json:"hash"`
	Checkpoint bool   `json:"checkpoint"`
	Line       int    `json:"line"`
}

// Links reads every chain link a file holds, whatever its format: JSON
// lines (records with "chain", {"checkpoint":…}), ECS documents
// (vmlineage.chain, vmlineage.checkpoint), CEF lines, bare or inside a
// syslog line (cn3 chainSeq, flexString1 chainHash). Lines with no link are
// counted as skipped.
func Links(r io.Reader) (links []Link, skipped int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		l, ok := linkOf(line)
		if !ok {
			skipped++
			continue
		}
		l.Line = n
		links = append(links, l)
	}
	return links, skipped, sc.Err()
}

func linkOf(line string) (Link, bool) {
	if i := strings.Index(line, "CEF:"); i >= 0 {
		ev, err := cef.Parse(line[i:])
		if err != nil {
			return Link{}, false
		}
		seqS, ok1 := ev.Custom(cef.LabelChainSeq)
		hash, ok2 := ev.Custom(cef.LabelChainHash)
		seq, err := strconv.ParseInt(seqS, 10, 64)
		if !ok1 || !ok2 || err != nil {
			return Link{}, false
		}
		return Link{Seq: seq, Hash: hash, Checkpoint: ev.SignatureID == "chain.checkpoint"}, true
	}
	i := strings.IndexByte(line, '{')
	if i < 0 {
		return Link{}, false
	}
	var doc struct {
		Chain      *record.Chain `json:"chain"`
		Checkpoint *Link         `json:"checkpoint"`
		VMLineage  *struct {
			Chain      *record.Chain `json:"chain"`
			Checkpoint *Link         `json:"checkpoint"`
		} `json:"vmlineage"`
	}
	if json.Unmarshal([]byte(line[i:]), &doc) != nil {
		return Link{}, false
	}
	switch {
	case doc.Chain != nil:
		return Link{Seq: doc.Chain.Seq, Hash: doc.Chain.Hash}, true
	case doc.Checkpoint != nil:
		return Link{Seq: doc.Checkpoint.Seq, Hash: doc.Checkpoint.Hash, Checkpoint: true}, true
	case doc.VMLineage != nil && doc.VMLineage.Chain != nil:
		return Link{Seq: doc.VMLineage.Chain.Seq, Hash: doc.VMLineage.Chain.Hash}, true
	case doc.VMLineage != nil && doc.VMLineage.Checkpoint != nil:
		return Link{Seq: doc.VMLineage.Checkpoint.Seq, Hash: doc.VMLineage.Checkpoint.Hash, Checkpoint: true}, true
	}
	return Link{}, false
}

// StoreResult is what AgainstStore found.
type StoreResult struct {
	Matched     int      `json:"matched"`
	Checkpoints int      `json:"checkpoints"`
	Problem     *Problem `json:"break,omitempty"`
}

// AgainstStore checks that the store holds, at each link's seq, a record
// with that hash: what a SIEM received then is what the store holds now.
// The first link that fails names the store's record at that seq.
func AgainstStore(ctx context.Context, st *lineage.Store, name string, links []Link) (*StoreResult, error) {
	res := &StoreResult{}
	for _, l := range links {
		if l.Seq == 0 {
			continue // a checkpoint of an empty chain
		}
		id, hash, ok, err := st.LinkAt(ctx, l.Seq)
		if err != nil {
			return res, err
		}
		what := ""
		switch {
		case !ok:
			what = fmt.Sprintf("the store holds no record at chain seq %d (deleted?)", l.Seq)
		case hash != l.Hash:
			what = fmt.Sprintf("the store's record there has hash %s, the copy says %s (altered or rewritten since it was sent)", hash, l.Hash)
		}
		if what != "" {
			res.Problem = &Problem{File: name, Line: l.Line, Seq: l.Seq, ID: id, What: what}
			return res, nil
		}
		res.Matched++
		if l.Checkpoint {
			res.Checkpoints++
		}
	}
	return res, nil
}
