package xensource

import (
	"bufio"
	"fmt"
	"io"
	"time"
)

// CorpusConfig shapes a generated log (see WriteCorpus).
type CorpusConfig struct {
	Hosts  []string  // host names; default xen1..xen3 (the first is the coordinator)
	Start  time.Time // time of the first operation; default 2026-12-31 20:00 UTC
	Seed   uint64    // varies task refs and uuids
	Failed int       // one operation in Failed fails (0: none)
	// Dense writes operations back to back, 1.5 s apart, with only the
	// lines Render writes (about one record per 12 lines): a stress case for
	// the deriver and the store, far denser in operations than a real log.
	Dense bool
	// The realistic corpus (Dense false) is shaped by the three values below;
	// README.md "Generated corpus" gives the evidence for the defaults.
	RunningVMs int           // running VMs per host (default 20); each logs xenopsd's guest-agent check once a minute
	OpEvery    time.Duration // one lifecycle operation in the pool this often (default 1 minute)
	Clients    int           // API clients (XenCenter, Xen Orchestra) polling event.from on each host (default 2)

	bare   bool // tests: only Render's lines of the same operations, no background and no per-operation detail
	maxOps int  // tests: stop after this many operations instead of at size
}

// WriteCorpus writes at least size bytes of xensource.log text, the hosts'
// lines merged in time order into one stream (what `replay` of a merged
// file or of a syslog collector's file sees), and returns the number of
// lines written. The default corpus is realistic: background lines of
// every running VM, API client and daemon, and lifecycle operations as
// verbose as xapi and xenopsd make them; Dense gives the operations alone.
// Used by benchmarks and by `make bench` to build a large replay corpus.
func WriteCorpus(w io.Writer, size int64, cfg CorpusConfig) (int64, error) {
	if len(cfg.Hosts) == 0 {
		cfg.Hosts = []string{"xen1", "xen2", "xen3"}
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Date(2026, 12, 31, 20, 0, 0, 0, time.UTC)
	}
	if cfg.Dense {
		return writeDense(w, size, cfg)
	}
	return writeRealistic(w, size, cfg)
}

// corpusOps is the rotation of operations both corpora cycle through.
var corpusOps = []string{"start", "clean_shutdown", "hard_reboot", "suspend", "resume", "pause", "unpause",
	"pool_migrate", "clone", "copy", "snapshot", "checkpoint", "revert", "destroy", "import", "export",
	"provision", "create", "hard_shutdown", "start_on"}

func writeDense(w io.Writer, size int64, cfg CorpusConfig) (int64, error) {
	hosts, start := cfg.Hosts, cfg.Start
	ops := corpusOps
	bw := bufio.NewWriterSize(w, 1<<20)
	var written, lines int64
	var pending []HostLine
	for i := 0; written < size; i++ {
		name := ops[i%len(ops)]
		op := Op{
			Time:     start.Add(time.Duration(i) * 1500 * time.Millisecond),
			Duration: time.Duration(1+i%4) * time.Second,
			Host:     hosts[(i/3)%len(hosts)], Master: hosts[0], Op: name,
			TaskRef: fmt.Sprintf("OpaqueRef:%08x-%04x-4%03x-8%03x-%012x", uint32(cfg.Seed)+uint32(i), i&0xffff, i&0xfff, (i>>12)&0xfff, cfg.Seed),
			VMUUID:  fmt.Sprintf("%08x-0000-4000-8000-%012x", i%5000, cfg.Seed), VMName: fmt.Sprintf("vm-%d", i%5000),
			NewName: fmt.Sprintf("vm-%d-child", i), Noise: i%2 == 0, Result: "success",
		}
		if name == "pool_migrate" && len(hosts) > 1 {
			op.DestHost = hosts[(i/3+1)%len(hosts)]
		}
		if cfg.Failed > 0 && i%cfg.Failed == cfg.Failed-1 {
			op.Result, op.ErrorInfo = "failure", []string{"VM_BAD_POWER_STATE", op.TaskRef, "halted", "running"}
		}
		pending = append(pending, Render(op)...)
		// Lines of the next operations start 1.5 s apart; write what can no
		// longer be overtaken (older than the next op's start) in time order.
		cut := op.Time.Add(1500 * time.Millisecond)
		sortLines(pending)
		k := 0
		for k < len(pending) && pending[k].Time.Before(cut) {
			n, err := bw.WriteString(pending[k].Line)
			if err == nil {
				err = bw.WriteByte('\n')
			}
			if err != nil {
				return lines, err
			}
			written += int64(n + 1)
			lines++
			k++
		}
		pending = append(pending[:0], pending[k:]...)
	}
	for _, hl := range pending {
		if _, err := bw.WriteString(hl.Line + "\n"); err != nil {
			return lines, err
		}
		lines++
	}
	return lines, bw.Flush()
}

func sortLines(ls []HostLine) {
	// Insertion sort: the slice is short and nearly sorted.
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].Time.Before(ls[j-1].Time); j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}
