package audit

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// position is how far a host's log was read over /audit_log, whose only
// cursor is an inclusive, string-compared since: the high-water mark (the
// greatest header stamp seen) and a hash of every line seen whose stamp is
// within Overlap of it. The next request asks for since = hwm - Overlap
// (lines can reach the file slightly out of stamp order: the stamp is taken
// before syslog() is called) and drops the lines it has hashed.
type position struct {
	HWM string // 21-character stamp
	// seen: stamp → FNV-64 hashes of the lines with that stamp.
	seen  map[string][]uint64
	nseen int
	// untimed hashes lines the server sends whatever since says (no "["
	// header): they are counted once. Bounded.
	untimed []uint64
}

// maxUntimed bounds the hashes kept of lines without a stamp; maxSeen the
// hashes of one overlap window (a host writing more lines than that within
// Overlap may see the oldest of them delivered twice after a restart).
const (
	maxUntimed = 256
	maxSeen    = 20000
)

// lineHash is FNV-1a 64 of the raw line (stable across processes, unlike
// maphash, since hashes are persisted).
func lineHash(s string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return h
}

// serverStamp is what audit_log.ml compares with since: the 21 characters
// after the line's first '['; ok is false when the line has no '[' or is
// too short (xapi keeps the first kind always, drops the second).
func serverStamp(line string) (string, bool) {
	i := strings.IndexByte(line, '[')
	if i < 0 || len(line) < i+1+21 {
		return "", false
	}
	return line[i+1 : i+22], true
}

// sinceFor is the since to request: hwm - overlap ("" before any line).
func (p *position) sinceFor(overlap time.Duration) string {
	if p.HWM == "" {
		return ""
	}
	t, ok := parseStamp(p.HWM + "Z")
	if !ok {
		return ""
	}
	return FormatSince(t.Add(-overlap))
}

// admit reports whether line is new, and records it.
func (p *position) admit(line string) bool {
	h := lineHash(line)
	st, ok := serverStamp(line)
	if !ok || !isStamp(st) {
		for _, u := range p.untimed {
			if u == h {
				return false
			}
		}
		p.untimed = append(p.untimed, h)
		if len(p.untimed) > maxUntimed {
			p.untimed = p.untimed[len(p.untimed)-maxUntimed:]
		}
		return true
	}
	if p.seen == nil {
		p.seen = map[string][]uint64{}
	}
	hs, have := p.seen[st]
	for _, x := range hs {
		if x == h {
			return false
		}
	}
	if !have {
		st = strings.Clone(st) // line may alias a read buffer
	}
	p.seen[st] = append(hs, h)
	p.nseen++
	if st > p.HWM {
		p.HWM = st
	}
	if p.nseen > maxSeen {
		p.shed()
	}
	return true
}

// shed forgets the oldest stamps' hashes until the set is back under its
// bound (never the high-water mark's own).
func (p *position) shed() {
	stamps := make([]string, 0, len(p.seen))
	for st := range p.seen {
		stamps = append(stamps, st)
	}
	sort.Strings(stamps)
	for _, st := range stamps {
		if p.nseen <= maxSeen*3/4 || st == p.HWM {
			break
		}
		p.nseen -= len(p.seen[st])
		delete(p.seen, st)
	}
}

// isStamp checks the YYYYMMDDTHH:MM:SS.mmm shape.
func isStamp(s string) bool {
	if len(s) != 21 || s[8] != 'T' || s[11] != ':' || s[14] != ':' || s[17] != '.' {
		return false
	}
	for i := 0; i < 21; i++ {
		switch i {
		case 8, 11, 14, 17:
			continue
		}
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// prune forgets hashes older than the overlap window.
func (p *position) prune(overlap time.Duration) {
	since := p.sinceFor(overlap)
	for st, hs := range p.seen {
		if st < since {
			p.nseen -= len(hs)
			delete(p.seen, st)
		}
	}
}

// positionJSON is the persisted form: hashes as 16-hex-digit runs per stamp.
type positionJSON struct {
	HWM     string            `json:"hwm,omitempty"`
	Seen    map[string]string `json:"seen,omitempty"`
	Untimed string            `json:"untimed,omitempty"`
}

func hexRun(hs []uint64) string {
	b := make([]byte, 0, 16*len(hs))
	for _, h := range hs {
		b = append(b, fmt.Sprintf("%016x", h)...)
	}
	return string(b)
}

func parseRun(s string) ([]uint64, error) {
	if len(s)%16 != 0 {
		return nil, fmt.Errorf("hash run of %d characters", len(s))
	}
	out := make([]uint64, 0, len(s)/16)
	for i := 0; i < len(s); i += 16 {
		v, err := strconv.ParseUint(s[i:i+16], 16, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (p *position) encode() string {
	j := positionJSON{HWM: p.HWM, Untimed: hexRun(p.untimed)}
	if len(p.seen) > 0 {
		j.Seen = make(map[string]string, len(p.seen))
		for st, hs := range p.seen {
			j.Seen[st] = hexRun(hs)
		}
	}
	b, _ := json.Marshal(j)
	return string(b)
}

func decodePosition(s string) (position, error) {
	var p position
	if s == "" {
		return p, nil
	}
	var j positionJSON
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		return p, err
	}
	if j.HWM != "" && !isStamp(j.HWM) {
		return p, fmt.Errorf("high-water mark %q is not a stamp", j.HWM)
	}
	p.HWM = j.HWM
	var err error
	if p.untimed, err = parseRun(j.Untimed); err != nil {
		return position{}, err
	}
	p.seen = map[string][]uint64{}
	for st, run := range j.Seen {
		hs, err := parseRun(run)
		if err != nil {
			return position{}, err
		}
		p.seen[st] = hs
		p.nseen += len(hs)
	}
	return p, nil
}

// hwmTime is the high-water mark as a time (zero before any line).
func (p *position) hwmTime() time.Time {
	t, _ := parseStamp(p.HWM + "Z")
	return t
}
