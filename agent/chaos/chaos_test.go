package chaos

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/verify"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
	"github.com/vmlineage/vmlineage/internal/receivers"
	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/outputs/syslog"
)

// params size a run. The short form (default) fits CI; CHAOS_FORM=long is
// the run by hand (make chaos). Every figure can be set by environment.
type params struct {
	Form            string
	Hosts, VMs, Ops int
	Seed            int64
	Kills           int           // SIGKILLs, at random moments of the play
	Duration        time.Duration // wall time of the play
	Outages         int           // stops of each receiver, and XAPI failovers
	SimFaults       int           // of each kind: session expiry, dropped connections, EVENTS_LOST
	Deadline        time.Duration // to reach quiescence after the play
	SpoolMax        int64         // spool_max_bytes of every output
}

func loadParams(t *testing.T) params {
	p := params{Form: "short", Hosts: 4, VMs: 1000, Ops: 2000, Seed: 1, Kills: 20, Duration: 70 * time.Second,
		Outages: 1, SimFaults: 4, Deadline: 4 * time.Minute, SpoolMax: 256 << 10}
	if os.Getenv("CHAOS_FORM") == "long" {
		p = params{Form: "long", Hosts: 8, VMs: 5000, Ops: 30000, Seed: 1, Kills: 100, Duration: 20 * time.Minute,
			Outages: 4, SimFaults: 30, Deadline: 20 * time.Minute, SpoolMax: 1 << 20}
	}
	ints := map[string]*int{"CHAOS_HOSTS": &p.Hosts, "CHAOS_VMS": &p.VMs, "CHAOS_OPS": &p.Ops, "CHAOS_KILLS": &p.Kills,
		"CHAOS_OUTAGES": &p.Outages, "CHAOS_SIM_FAULTS": &p.SimFaults}
	for k, v := range ints {
		if s := os.Getenv(k); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				t.Fatalf("%s=%q: want a whole number", k, s)
			}
			*v = n
		}
	}
	durs := map[string]*time.Duration{"CHAOS_DURATION": &p.Duration, "CHAOS_DEADLINE": &p.Deadline}
	for k, v := range durs {
		if s := os.Getenv(k); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a duration such as 90s", k, s)
			}
			*v = d
		}
	}
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want a number", s)
		}
		p.Seed = n
	}
	if s := os.Getenv("CHAOS_SPOOL_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 64<<10 {
			t.Fatalf("CHAOS_SPOOL_BYTES=%q: want a number of bytes, at least 65536", s)
		}
		p.SpoolMax = n
	}
	return p
}

// output names: the receivers' side of each.
const (
	outTCP = "siem-tcp" // CEF over TCP into rsyslog (input "imtcp")
	outTLS = "siem-tls" // CEF over TLS into rsyslog (input "tls-gtls")
	outES  = "es"       // ECS through the Elasticsearch output into VictoriaLogs
	outESC = "es-cluster"
	nsVL   = "chaos"
)

// rsyslog input names (internal/receivers' configuration).
var syslogInput = map[string]string{outTCP: "imtcp", outTLS: "tls-gtls"}

type run struct {
	t      *testing.T
	p      params
	dir    string
	data   string
	logs   string
	srv    *xapisim.Server
	hl     *xapisim.HostLogWriter
	rs     *receivers.Rsyslog
	vl     *receivers.VictoriaLogs
	es     *esCluster
	esNS   string
	agent  *agentProc
	rng    *rand.Rand
	rngMu  sync.Mutex
	faults Faults
	fmu    sync.Mutex
	// down is set while a receiver or XAPI is stopped by the suite.
	rsDown, vlDown, xapiDown atomic.Bool
}

func (r *run) randN(n int) int {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return r.rng.IntN(n)
}

func (r *run) count(f func(*Faults)) {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	f(&r.faults)
}

// event notes a fault with its time (wall and the pool's virtual clock) in
// the work dir's faults.log, for forensics.
func (r *run) event(format string, args ...any) {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	f, err := os.OpenFile(filepath.Join(r.dir, "faults.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s pool %s agent %d: %s\n", time.Now().UTC().Format("15:04:05.000"), r.srv.Now().UTC().Format("15:04:05"),
		r.agent.current(), fmt.Sprintf(format, args...))
}

// TestChaos is the end-to-end durability suite (issue 9); see README.md.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos suite runs real receivers and the agent for minutes")
	}
	p := loadParams(t)
	began := time.Now()
	r := &run{t: t, p: p, rng: rand.New(rand.NewPCG(uint64(p.Seed), 99)), faults: Faults{SpoolFull: map[string]int{}}}
	r.dir = os.Getenv("CHAOS_DIR") // kept for forensics when set
	if r.dir == "" {
		r.dir = t.TempDir()
	} else if err := os.MkdirAll(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.data, r.logs = filepath.Join(r.dir, "data"), filepath.Join(r.dir, "hostlogs")
	t.Logf("chaos %s form: %d hosts, %d VMs, %d operations, seed %d, %d SIGKILLs over a %s play; work dir %s",
		p.Form, p.Hosts, p.VMs, p.Ops, p.Seed, p.Kills, p.Duration, r.dir)

	r.rs = receivers.StartRsyslogWith(t, receivers.RsyslogOptions{NoCEFParse: true})
	r.vl = receivers.StartVictoriaLogs(t)
	r.es = esFromEnv()
	bin := buildAgent(t, r.dir)

	// The scenario starts now: the hosts' log lines carry no year, and the
	// agent anchors them to its own clock.
	sc := xapisim.Generate(xapisim.GenConfig{Hosts: p.Hosts, VMs: p.VMs, Ops: p.Ops, Seed: p.Seed})
	sc.Start = time.Now().UTC().Truncate(time.Second)
	virtual := time.Duration(sc.Steps[len(sc.Steps)-1].At) + 20*time.Second
	speed := virtual.Seconds() / p.Duration.Seconds()
	r.srv = xapisim.New(xapisim.Config{Scenario: sc, TLS: true, Password: "chaos-pw"})
	if err := r.srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.srv.Close()

	cfgPath := r.writeConfig()
	r.agent = &agentProc{t: t, bin: bin, config: cfgPath, logDir: r.dir}
	r.agent.start()
	defer r.agent.stop(30 * time.Second)
	st := r.waitBaseline()
	defer st.Close()

	// Play, with the hosts writing their logs, while the faults run.
	r.hl = r.srv.WriteHostLogs(r.logs, 200*time.Millisecond, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	played := make(chan error, 1)
	playStart := time.Now()
	go func() { played <- r.srv.Play(ctx, sc, speed) }()
	var wg sync.WaitGroup
	stopFaults := make(chan struct{})
	for _, f := range []func(<-chan struct{}){r.simFaults, r.rsyslogOutages, r.vlOutages, r.failovers} {
		wg.Add(1)
		go func() { defer wg.Done(); f(stopFaults) }()
	}
	r.kills(played)
	close(stopFaults)
	wg.Wait()
	r.hl.Close(ctx)
	t.Logf("play over after %s (speed %.1f virtual s per s); faults healed", time.Since(playStart).Round(time.Second), speed)
	if !r.agent.alive() {
		t.Fatalf("the agent is not running: %s", r.agent.tail(r.agent.current()))
	}

	// Quiescence: every record stored, sealed and delivered, or the deadline.
	truth, _ := r.srv.Truth()
	c := r.waitQuiet(st, truth)
	time.Sleep(3 * time.Second) // a late duplicate would show now
	if err := r.agent.stop(time.Minute); err != nil {
		t.Error(err)
	}
	st.Close()
	r.report(bin, truth, c)
	t.Logf("wall time %s", time.Since(began).Round(time.Second))
}

func (r *run) writeConfig() string {
	pw := filepath.Join(r.dir, "xapi-password")
	if err := os.WriteFile(pw, []byte("chaos-pw\n"), 0o600); err != nil {
		r.t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `data_dir: %q
log: {level: info, format: json}
xapi:
  url: %q
  password_file: %q
  fingerprint: %q
  event_timeout: 2s
  call_timeout: 20s
  backoff_max: 1s
logsource:
  glob: %q
  poll: 200ms
  failover_after: 2s
  idle_timeout: 30s
  hold: 5s
chain:
  settle: 10s
  checkpoint_every: 15s
outputs:
  - {name: %s, type: syslog, format: cef, network: tcp, address: %q, spool_max_bytes: %d, when_full: block}
  - {name: %s, type: syslog, format: cef, network: tls, address: %q, ca_file: %q, spool_max_bytes: %d, when_full: block}
  - {name: %s, type: elasticsearch, urls: [%q], namespace: %s, spool_max_bytes: %d, when_full: block}
`, r.data, r.srv.URL(), pw, r.srv.CertFingerprint(), filepath.Join(r.logs, "*", "xensource.log"),
		outTCP, r.rs.TCPAddr, r.p.SpoolMax, outTLS, r.rs.TLSAddr, r.rs.CAFile, r.p.SpoolMax, outES, r.vl.ESURL, nsVL, r.p.SpoolMax)
	if r.es != nil {
		r.esNS = fmt.Sprintf("chaos%d", time.Now().UnixNano()%1e9)
		fmt.Fprintf(&b, "  - {name: %s, type: elasticsearch, urls: [%q], namespace: %s", outESC, r.es.url, r.esNS)
		if r.es.user != "" {
			pf := filepath.Join(r.dir, "es-password")
			os.WriteFile(pf, []byte(r.es.password+"\n"), 0o600)
			fmt.Fprintf(&b, ", username: %q, password_file: %q", r.es.user, pf)
		}
		if r.es.apiKey != "" {
			kf := filepath.Join(r.dir, "es-api-key")
			os.WriteFile(kf, []byte(r.es.apiKey+"\n"), 0o600)
			fmt.Fprintf(&b, ", api_key_file: %q", kf)
		}
		if ca := os.Getenv("ES_CA_FILE"); ca != "" {
			fmt.Fprintf(&b, ", ca_file: %q", ca)
		}
		if fp := os.Getenv("ES_FINGERPRINT"); fp != "" {
			fmt.Fprintf(&b, ", fingerprint: %q", fp)
		}
		b.WriteString("}\n")
	}
	path := filepath.Join(r.dir, "vmlineage.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		r.t.Fatal(err)
	}
	out, err := exec.Command(r.agent0bin(), "config", "check", path).CombinedOutput()
	if err != nil {
		r.t.Fatalf("config check: %v\n%s", err, out)
	}
	return path
}

func (r *run) agent0bin() string { return filepath.Join(r.dir, "vmlineage") }

// waitBaseline waits for the agent's first sync with the pool (the event
// token in the store) and for its log source to start: an operator starts
// the agent before the work it watches.
func (r *run) waitBaseline() *lineage.Store {
	t := r.t
	deadline := time.Now().Add(2 * time.Minute)
	var st *lineage.Store
	for {
		if st == nil {
			if _, err := os.Stat(filepath.Join(r.data, "lineage.db")); err == nil {
				st, _ = lineage.Open(filepath.Join(r.data, "lineage.db"))
			}
		}
		ok := false
		if st != nil {
			v, _ := st.AgentState(context.Background(), "xapi.token")
			ok = v != "" && r.agent.logged(func(l logLine) bool { return l.msg() == "log source started" }) > 0
		}
		if ok {
			return st
		}
		if time.Now().After(deadline) || !r.agent.alive() {
			t.Fatalf("the agent did not sync with the pool and start its log source: %s", r.agent.tail(r.agent.current()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kills SIGKILLs the agent at random moments until the play is over and at
// least p.Kills kills were done; a killed agent stays dead for a random
// while (the operations of that while are seen by the catch-up, a resync
// or the logs).
func (r *run) kills(played <-chan error) {
	t, p := r.t, r.p
	mean := p.Duration / time.Duration(p.Kills+1)
	next := func() time.Duration {
		return mean/4 + time.Duration(r.randN(int(mean*3/2/time.Millisecond)))*time.Millisecond
	}
	timer := time.NewTimer(next())
	defer timer.Stop()
	over := false
	for !over || r.faults.Kills < p.Kills {
		select {
		case err := <-played:
			if err != nil {
				t.Fatalf("play: %v", err)
			}
			over = true
			played = nil
		case <-timer.C:
			if !r.agent.alive() {
				t.Errorf("agent %d died by itself: %s", r.agent.current(), r.agent.tail(r.agent.current()))
			}
			r.agent.kill()
			r.count(func(f *Faults) { f.Kills++ })
			r.event("SIGKILL")
			time.Sleep(time.Duration(r.randN(1500)) * time.Millisecond)
			r.agent.start()
			timer.Reset(next())
		}
	}
}

// at runs fn at n random moments of the play (in order), until stop.
func (r *run) at(n int, lo, hi float64, stop <-chan struct{}, fn func(i int)) {
	var ts []time.Duration
	for i := 0; i < n; i++ {
		f := lo + (hi-lo)*float64(r.randN(1000))/1000
		ts = append(ts, time.Duration(f*float64(r.p.Duration)))
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	start := time.Now()
	for i, d := range ts {
		select {
		case <-stop:
			return
		case <-time.After(time.Until(start.Add(d))):
		}
		fn(i)
	}
}

// simFaults makes the simulator expire sessions, drop connections and
// answer EVENTS_LOST.
func (r *run) simFaults(stop <-chan struct{}) {
	r.at(3*r.p.SimFaults, 0.02, 0.95, stop, func(i int) {
		switch r.randN(3) {
		case 0:
			r.event("sessions expired")
			r.srv.ExpireSessions()
			r.count(func(f *Faults) { f.SessionsExpired++ })
		case 1:
			r.event("connections dropped")
			r.srv.DropConnections()
			r.count(func(f *Faults) { f.ConnsDropped++ })
		default:
			r.event("EVENTS_LOST")
			r.srv.InjectEventsLost()
			r.count(func(f *Faults) { f.EventsLost++ })
		}
	})
}

// spoolBytes is what an output's spool holds on disk.
func (r *run) spoolBytes(name string) int64 {
	segs, _ := filepath.Glob(filepath.Join(r.data, "spool", name, "seg-*.log"))
	var n int64
	for _, s := range segs {
		if fi, err := os.Stat(s); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// waitFull waits until the spools of outs reach their limit (the feeder
// then blocks: when_full block), or gives up after d.
func (r *run) waitFull(outs []string, d time.Duration) {
	deadline := time.Now().Add(d)
	full := map[string]bool{}
	for len(full) < len(outs) && time.Now().Before(deadline) {
		for _, o := range outs {
			// The feeder appends a batch only when it fits: "full" is
			// within one append (a quarter of the limit) of it.
			if !full[o] && r.spoolBytes(o) >= r.p.SpoolMax*3/4 {
				full[o] = true
				r.count(func(f *Faults) { f.SpoolFull[o]++ })
				r.event("spool of %s at its limit (%d bytes)", o, r.spoolBytes(o))
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, o := range outs {
		if !full[o] {
			r.t.Logf("spool of %s did not reach its limit within %s (%d of %d bytes)", o, d, r.spoolBytes(o), r.p.SpoolMax)
		}
	}
}

// rsyslogOutages stops rsyslog until both syslog spools are full, then
// starts it again.
func (r *run) rsyslogOutages(stop <-chan struct{}) {
	r.at(r.p.Outages, 0.1, 0.6, stop, func(int) {
		r.rsDown.Store(true)
		r.event("rsyslog stopped")
		r.rs.Stop()
		r.waitFull([]string{outTCP, outTLS}, r.p.Duration/4)
		r.rs.Start()
		r.event("rsyslog started")
		r.rsDown.Store(false)
		r.count(func(f *Faults) { f.RsyslogRestarts++ })
	})
}

func (r *run) vlOutages(stop <-chan struct{}) {
	r.at(r.p.Outages, 0.3, 0.85, stop, func(int) {
		r.vlDown.Store(true)
		r.event("victorialogs stopped")
		r.vl.Stop()
		r.waitFull([]string{outES}, r.p.Duration/4)
		r.vl.Start()
		r.event("victorialogs started")
		r.vlDown.Store(false)
		r.count(func(f *Faults) { f.VictoriaRestarts++ })
	})
}

// failovers closes the XAPI endpoint until the agent's log source has
// taken over, rotates every host's log meanwhile, and opens it again.
func (r *run) failovers(stop <-chan struct{}) {
	r.at(r.p.Outages, 0.2, 0.8, stop, func(int) {
		r.xapiDown.Store(true)
		r.event("XAPI paused")
		r.srv.Pause()
		r.count(func(f *Faults) { f.Failovers++ })
		// The log source takes over after failover_after (2s); a killed
		// agent starts again in standby, so wait for the takeover by state.
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) && !r.tookOver() {
			time.Sleep(200 * time.Millisecond)
		}
		r.rotateAll()
		time.Sleep(time.Duration(2000+r.randN(3000)) * time.Millisecond)
		r.rotateAll()
		time.Sleep(time.Duration(1000+r.randN(2000)) * time.Millisecond)
		if err := r.srv.Resume(); err != nil {
			r.t.Errorf("resuming XAPI: %v", err)
		}
		r.event("XAPI resumed")
		r.xapiDown.Store(false)
	})
}

// tookOver reports whether the running agent's log source is active.
func (r *run) tookOver() bool {
	active := false
	for _, l := range r.agent.logs(r.agent.current()) {
		if l.msg() == "log source mode" {
			active = l.str("to") == "active"
		}
	}
	return active
}

// rotateAll rotates every host's xensource.log: logrotate's rename (the
// writer keeps writing to the renamed file until it reopens, as rsyslog
// until its HUP) or copytruncate, older generations shifted and gzipped
// (delaycompress).
func (r *run) rotateAll() {
	dirs, _ := filepath.Glob(filepath.Join(r.logs, "*"))
	for _, d := range dirs {
		p := filepath.Join(d, "xensource.log")
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			continue
		}
		copyTruncate := r.randN(3) == 0
		r.hl.Hold(func() {
			shift(r.t, p)
			if copyTruncate {
				data, err := os.ReadFile(p)
				if err == nil {
					os.WriteFile(p+".1", data, 0o644)
					os.Truncate(p, 0)
				}
				return
			}
			os.Rename(p, p+".1")
		})
		if !copyTruncate {
			// The writer appends to the renamed file a little longer.
			time.Sleep(time.Duration(50+r.randN(250)) * time.Millisecond)
			r.hl.Reopen()
		}
		r.count(func(f *Faults) { f.Rotations++ })
		r.event("rotated %s (copytruncate %v)", p, copyTruncate)
	}
}

// shift renames p.N to p.N+1 (gzipping p.1 as it becomes p.2), keeping 20.
func shift(t *testing.T, p string) {
	for g := 20; g >= 1; g-- {
		for _, ext := range []string{"", ".gz"} {
			from := fmt.Sprintf("%s.%d%s", p, g, ext)
			if _, err := os.Stat(from); err != nil {
				continue
			}
			if g == 20 {
				os.Remove(from)
				continue
			}
			to := fmt.Sprintf("%s.%d%s", p, g+1, ext)
			if err := os.Rename(from, to); err != nil {
				t.Errorf("rotating: %v", err)
			}
			if ext == "" {
				gzipFile(t, to)
			}
		}
	}
}

func gzipFile(t *testing.T, p string) {
	data, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("gzip: %v", err)
		return
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	if err := os.WriteFile(p+".gz", b.Bytes(), 0o644); err != nil {
		t.Errorf("gzip: %v", err)
	}
	os.Remove(p)
}

// waitQuiet waits until the store holds every record the truth asks for,
// all sealed, and every receiver holds every one of them; it gives up at
// the deadline (the report then names what is missing).
func (r *run) waitQuiet(st *lineage.Store, truth []record.Record) *Classification {
	t := r.t
	ctx := context.Background()
	deadline := time.Now().Add(r.p.Deadline)
	var c *Classification
	last := time.Time{}
	for {
		stored, err := st.Records(ctx, lineage.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		c = Classify(truth, stored)
		unsealed, _ := st.Unsealed(ctx)
		have := countSyslog(t, r.rs)
		vl := countVL(t, r.vl, nsVL)
		want := len(c.Expected)
		done := len(c.Missing) == 0 && unsealed == 0 && have[syslogInput[outTCP]] >= want && have[syslogInput[outTLS]] >= want && vl >= want
		if time.Since(last) > 15*time.Second || done {
			t.Logf("waiting for quiescence: store %d records (%d missing, %d unsealed); rsyslog tcp %d, tls %d; victorialogs %d; of %d expected",
				len(stored), len(c.Missing), unsealed, have[syslogInput[outTCP]], have[syslogInput[outTLS]], vl, want)
			last = time.Now()
		}
		if done {
			return c
		}
		if time.Now().After(deadline) {
			t.Errorf("no quiescence within %s", r.p.Deadline)
			return c
		}
		if !r.agent.alive() {
			t.Fatalf("the agent died: %s", r.agent.tail(r.agent.current()))
		}
		time.Sleep(2 * time.Second)
	}
}

// report counts every receiver against the truth, checks the chain, prints
// the table and asserts the acceptance.
func (r *run) report(bin string, truth []record.Record, _ *Classification) {
	t := r.t
	ctx := context.Background()
	st, err := lineage.Open(filepath.Join(r.data, "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stored, err := st.Records(ctx, lineage.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	c := Classify(truth, stored)
	if f, err := os.Create(filepath.Join(r.dir, "truth.jsonl")); err == nil {
		enc := json.NewEncoder(f)
		for i := range truth {
			enc.Encode(&truth[i])
		}
		f.Close()
	}
	storeCopies := make([]Copy, 0, len(stored))
	for _, s := range stored {
		storeCopies = append(storeCopies, Copy{ID: s.ID})
	}
	tallies := []Tally{Count("store", "lineage.db", c.Expected, storeCopies, false)}

	if os.Getenv("CHAOS_DIR") != "" { // kept for forensics: receive times
		if b, err := os.ReadFile(r.rs.Out); err == nil {
			os.WriteFile(filepath.Join(r.dir, "rsyslog-out.jsonl"), b, 0o644)
		}
	}
	var syslogMsgs []string
	for _, o := range []string{outTCP, outTLS} {
		copies, msgs := syslogCopies(t, r.rs, syslogInput[o])
		tallies = append(tallies, Count(o, "rsyslog "+syslogInput[o], c.Expected, copies, false))
		syslogMsgs = append(syslogMsgs, msgs...)
		r.vouch(st, o, msgs)
	}
	vlc, vlLinks := vlCopies(t, r.vl, nsVL)
	tallies = append(tallies, Count(outES, "victorialogs", c.Expected, vlc, true))
	if vs, err := verify.AgainstStore(ctx, st, "victorialogs", vlLinks); err != nil || vs.Problem != nil {
		t.Errorf("the VictoriaLogs copy does not vouch for the store: %v %v", err, vs.Problem)
	}
	if r.es != nil {
		tallies = append(tallies, Count(outESC, "elasticsearch", c.Expected, r.es.copies(t, "logs-vmlineage.lifecycle-"+r.esNS), true))
	}

	// The store's own chain, and the SIEM copy against it, by the CLI.
	siem := filepath.Join(r.dir, "siem-copy.cef")
	os.WriteFile(siem, []byte(strings.Join(syslogMsgs, "\n")+"\n"), 0o644)
	for _, args := range [][]string{{"verify", "--data-dir", r.data}, {"verify", "--data-dir", r.data, "--checkpoints", siem}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("vmlineage %s: %v\n%s", strings.Join(args, " "), err, out)
		} else {
			t.Logf("vmlineage %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
		}
	}

	r.faults.RotationsSeen = r.agent.logged(func(l logLine) bool {
		return l.msg() == "log source: rotation" || l.msg() == "log source: truncated or rewritten in place"
	})
	r.faults.ActiveSeen = r.agent.logged(func(l logLine) bool { return l.msg() == "log source mode" && l.str("to") == "active" })
	fromLogs := 0
	for _, s := range stored {
		if s.Source == record.SourceLog {
			fromLogs++
		}
	}
	written, consumed := r.logLines(st)
	var tab strings.Builder
	WriteTable(&tab, c, tallies, r.faults)
	fmt.Fprintf(&tab, "hosts' log lines: %d written (all generations), %d consumed by the log source\n", written, consumed)
	fmt.Fprintf(&tab, "records from xensource.log: %d; resync records standing for setters: %d\n", fromLogs, len(c.StoodFor))
	fields := CountFields(truth, stored)
	fmt.Fprintln(&tab, fields)
	t.Logf("chaos %s form, %d operations:\n%s", r.p.Form, r.p.Ops, tab.String())
	if p := os.Getenv("CHAOS_REPORT"); p != "" {
		os.WriteFile(p, []byte(tab.String()), 0o644)
	}
	for _, s := range c.StoodFor {
		t.Logf("stood for by resync record %s: %s of %s (%s)", s.Stored.ID, s.Truth.Activity, s.Truth.VMName, s.Reason)
	}
	for _, s := range c.Unseen {
		t.Logf("not expected: %s of %s (%s)", s.Truth.Activity, s.Truth.VMName, s.Reason)
	}

	// Acceptance.
	for i, d := range c.Defects() {
		if i == 50 {
			t.Errorf("… %d more defects", len(c.Defects())-50)
			break
		}
		t.Error(d)
	}
	for _, d := range fields.Defects() {
		t.Error(d)
	}
	for _, tl := range tallies {
		if len(tl.Missing) > 0 {
			t.Errorf("%s: %d records missing, e.g. %v", tl.Output, len(tl.Missing), tl.Missing[:min(5, len(tl.Missing))])
		}
		if unexpected := tl.Unexpected; len(unexpected) > 0 {
			t.Errorf("%s: %d record ids not expected, e.g. %v", tl.Output, len(unexpected), unexpected[:min(5, len(unexpected))])
		}
		if len(tl.Conflicts) > 0 {
			t.Errorf("%s: %d ids carry two different records, e.g. %v", tl.Output, len(tl.Conflicts), tl.Conflicts[:min(5, len(tl.Conflicts))])
		}
		if tl.Output == "store" && tl.Duplicated > 0 {
			t.Errorf("store: %d ids twice", tl.Duplicated)
		}
		if !tl.DupByID && tl.ReSends > 0 {
			t.Logf("%s: largest span from a copy to the last new record before its repeat: %s (record %s, copy received %s, last new record %s); bound %s",
				tl.Output, tl.WindowSpan, tl.WindowSpanID, tl.WindowSpanFrom.UTC().Format("15:04:05.000000"), tl.WindowSpanTo.UTC().Format("15:04:05.000000"), syslogDupSpan)
		}
		if !tl.DupByID && tl.WindowSpan > syslogDupSpan {
			t.Errorf("%s: between a record's copy and its repeat the receiver took new records for %s, beyond the at-least-once window (%s): record %s, copy received %s, last new record %s",
				tl.Output, tl.WindowSpan, syslogDupSpan, tl.WindowSpanID, tl.WindowSpanFrom.UTC().Format("15:04:05.000000"), tl.WindowSpanTo.UTC().Format("15:04:05.000000"))
		}
	}
	if consumed != written {
		t.Errorf("the log source consumed %d of the %d lines the hosts wrote (rotations lose nothing)", consumed, written)
	}
	f := r.faults
	if f.Kills < r.p.Kills || f.RsyslogRestarts < 1 || f.VictoriaRestarts < 1 || f.SessionsExpired < 1 || f.ConnsDropped < 1 ||
		f.EventsLost < 1 || f.Rotations < 1 || f.Failovers < 1 || f.ActiveSeen < 1 ||
		f.SpoolFull[outTCP] < 1 || f.SpoolFull[outTLS] < 1 || f.SpoolFull[outES] < 1 || fromLogs == 0 {
		t.Errorf("not every fault happened (the run tested less than it claims): %+v, %d records from the logs", f, fromLogs)
	}
	// Error lines of the agents, once per message.
	seen := map[string]int{}
	var order []string
	for _, p := range r.agent.problems() {
		k := problemKey(p)
		if seen[k] == 0 {
			order = append(order, p)
		}
		seen[k]++
	}
	for _, p := range order {
		t.Logf("agent log (%d like it): %s", seen[problemKey(p)], p)
	}
}

// logLines counts the lines of every host's log, in all its generations
// (plain and gzipped), and the lines the log source says it consumed of
// each (logsource.FileLines): rotation, copytruncate and kills must lose
// none and read none twice.
func (r *run) logLines(st *lineage.Store) (written, consumed int64) {
	dirs, _ := filepath.Glob(filepath.Join(r.logs, "*"))
	for _, d := range dirs {
		files, _ := filepath.Glob(filepath.Join(d, "xensource.log*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				r.t.Errorf("reading %s: %v", f, err)
				continue
			}
			if strings.HasSuffix(f, ".gz") {
				zr, err := gzip.NewReader(bytes.NewReader(b))
				if err != nil {
					r.t.Errorf("%s: %v", f, err)
					continue
				}
				if b, err = io.ReadAll(zr); err != nil {
					r.t.Errorf("%s: %v", f, err)
				}
			}
			written += int64(bytes.Count(b, []byte("\n")))
		}
		n, err := logsource.FileLines(context.Background(), st, filepath.Join(d, "xensource.log"))
		if err != nil {
			r.t.Errorf("lines consumed of %s: %v", d, err)
		}
		consumed += n
	}
	return written, consumed
}

// problemKey is a log line's message, to count alike lines.
func problemKey(p string) string {
	i := strings.Index(p, `"msg":`)
	if i < 0 {
		return p
	}
	k := p[i:]
	if j := strings.Index(k, `","`); j >= 0 {
		k = k[:j]
	}
	return k
}

// syslogDupSpan bounds Tally.WindowSpan for syslog: outputs/README.md's
// at-least-once window, outputs.RepeatWindow of the syslog output's
// ReplayWindow (the agent's configuration leaves it at its default, 2 s):
// the Shipper ends every write within 4 s of the start of the write of the
// oldest record not yet confirmed, so between a copy of a record and its
// repeat the receiver takes only records written within 4 s after that
// copy. receiveSlack is the one thing on top: rsyslog stamps a message
// (timegenerated) when it reads it from its socket, not when the agent
// wrote it, so the last new record's stamp trails its write by rsyslog's
// read delay (the copy's own stamp can only trail its write, which
// shortens the span).
var syslogDupSpan = outputs.RepeatWindow(syslog.DefaultReplayWindow) + receiveSlack

// receiveSlack is rsyslog's read delay allowed for on a loaded 2-core
// machine (rsyslog shares the cores with the agent, the simulator and the
// test): measured up to 0.17 s in short runs, about 1 ms at the median
// (README, "Counting each output").
const receiveSlack = 500 * time.Millisecond

// vouch checks that the links a syslog copy carries match the store.
func (r *run) vouch(st *lineage.Store, name string, msgs []string) {
	links, _, err := verify.Links(strings.NewReader(strings.Join(msgs, "\n")))
	if err != nil {
		r.t.Errorf("%s: reading links: %v", name, err)
		return
	}
	vs, err := verify.AgainstStore(context.Background(), st, name, links)
	if err != nil || vs.Problem != nil {
		r.t.Errorf("the %s copy does not vouch for the store: %v %v", name, err, vs.Problem)
		return
	}
	if vs.Matched == 0 || vs.Checkpoints == 0 {
		r.t.Errorf("%s: %d links and %d checkpoints vouched for the store", name, vs.Matched, vs.Checkpoints)
	}
}
