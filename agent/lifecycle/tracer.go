// Package lifecycle is the tracer: it follows XAPI's event stream, pairs
// each task from creation to completion (paper, section 3.3) and turns it
// into a lifecycle record, ties tasks to VMs through VM.current_operations
// and to the VMs they create through the task result, and keeps the VM
// family tree and each VM's state, host and addresses in the lineage store.
//
// Every event batch is applied in one store transaction together with the
// event token and the tracer's pending-task state, so an agent killed at any
// moment resumes exactly where it stopped.
package lifecycle

import (
	"context"
	"log/slog"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// Agent-state keys in the lineage store.
const (
	KeyToken    = "xapi.token"
	KeyPool     = "xapi.pool_uuid"
	KeyPending  = "tracer.pending"
	KeyBaseline = "tracer.baseline"
)

// Stats are the tracer's counters.
type Stats struct {
	Events, Batches, Records, ResyncRecords, Resyncs int64
	// Reconciled counts objects found deleted by re-reading refs: dels
	// event.from dropped because the tracer fell behind (reconcile.go).
	Reconciled int64
	// Commits counts the store transactions the tracer committed (group
	// commit: what it costs the store is per transaction, not per event).
	Commits int64
}

// Tracer turns XAPI events into lifecycle records. It implements the
// watcher's handler (Token, Events, Resync). It is not safe for concurrent
// use: one watcher drives it.
type Tracer struct {
	store *lineage.Store
	log   *slog.Logger
	// OnRecord, when set, is called after each committed record (streaming
	// detectors, stdout in demo).
	OnRecord func(*record.Record)
	// OtherSources says records of this pool also come from elsewhere (the
	// xensource.log source): a change the tracer can only infer waits its
	// grace even at a resync, and is not recorded when that source stored
	// the operation behind it (explainedByStore).
	OtherSources bool
	// OtherSettled, with OtherSources, tells up to what pool time the other
	// source has committed everything it will ever yield
	// (logsource.Engine.Settled): a change also waits until that source has
	// settled past it, so that an operation the logs reveal (a task without
	// an end marker closes only after their idle timeout) is stored under
	// its own id, never also inferred. OtherWait bounds that wait in each
	// process (a source that never settles: its files are gone), counted
	// from when the change was noted or the process started.
	OtherSettled func() time.Time
	OtherWait    time.Duration
	started      time.Time

	pool     poolInfo
	hosts    map[string]hostInfo
	vms      map[string]*vmInfo // by ref
	gone     map[string]*vmInfo // recently deleted VMs by ref, for tasks that finish after the del
	goneFIFO []string
	byUUID   map[string]string // VM uuid → ref
	tasks    map[string]*taskInfo
	recorded []string  // refs of recorded tasks not yet deleted, oldest first (gc)
	spareVMs []vmWrite // the VM writes of the last commit, emptied, for the next
	jsonBuf  []byte    // savePending's encoding buffer
	vifs     map[string]vifInfo
	gms      map[string][]string // guest metrics ref → IPs
	gmVM     map[string]string   // guest metrics ref → VM ref
	edges    map[string]edge     // VM uuid → its family-tree edge: a cache over the store (edge.go)
	loaded   bool
	serverAt time.Time // newest time seen in the pool's own records
	// seenAt is the newest pool time known to precede what the tracer has
	// applied: task times in the data, and clock readings taken before the
	// data was fetched. A reading (SetServerTime) is taken after the data
	// it comes with (host.get_servertime follows a resync's fetch and the
	// catch-up's event.from), so it counts only from the next delivery on
	// (readBefore): a VM changed between a resync's fetch and its clock
	// reading would otherwise look changed after the reading.
	seenAt, read, readBefore time.Time
	seq                      int64           // events applied so far (this process), for attribution windows
	claimed                  map[string]bool // VM refs a record already names as created
	recent                   []recentEvent   // recent VM events, for attribution windows (attribute.go)
	// recentTrimmed: older events were dropped from recent.
	recentTrimmed bool
	changes       map[string]change // unexplained VM changes waiting for a task (unexplained.go)
	notedNow      []string          // keys of the changes the batch being applied noted
	gapSeq        int64             // event seq of the last gap in what the tracer saw (start, resync)
	catchUp       bool              // the next batch is the catch-up after a start: a gap too
	claimedLog    map[string]bool   // logged creations already matched to a VM (unexplained.go)
	// beforeGap holds the tasks known when the current gap began (restored
	// at a start, held at a resync): a VM's state from before the gap may
	// already show their effect (noteImplied).
	beforeGap     map[string]bool
	unsure        []unsureWindow           // windows of tasks recorded without their VM, this process (rivalFor)
	loggedChecked time.Time                // when completeLogged last looked up every VM that appeared
	awaitNew      map[string]record.Record // VM ref → record of the creation whose result named it, the VM not yet seen (expectNew)
	awaitFIFO     []string
	batchUnknown  []record.Record        // the settling batch's records without their VM or of unknown result (explainedByUnattributed)
	contact       time.Time              // pool time up to which the last commit saw the pool (seenAt)
	written       map[string]written     // what the store holds of each VM (commit.go)
	synced        atomic.Pointer[string] // pool uuid of the last commit, for other goroutines
	// What MayName reads from other goroutines: the last commit's contact
	// (unix ms) and the names of the VMs whose appearance it left pending.
	pubContact atomic.Int64
	pubAppear  atomic.Pointer[map[string]bool]
	// The batch applied but not yet committed (group commit, see Events).
	open       *writes
	openToken  string
	openSince  time.Time
	openEvents int
	// What the store holds of the pending state (resync.go savePending),
	// and what changed since the last commit.
	savedHead, savedServerAt     string
	savedContact                 string
	savedTasks                   map[string]string // task ref → its key's sequence number
	taskKeySeq                   int64
	savedChanges                 map[string]bool
	touchedTasks, touchedChanges map[string]bool
	// Task refs alive in the pool as far as the event stream says (seen,
	// not deleted), and the pool's counts of the last batch: event.from
	// drops dels silently when a client falls behind (reconcile.go).
	live         map[string]bool
	liveKnown    bool
	counts       map[string]int
	lastTaskSync time.Time
	// What the store holds of hosts and pool (writeHosts), and the pool
	// uuid under KeyPool.
	hostsWritten   map[string]hostInfo
	hostsWrittenAt time.Time
	poolWritten    poolInfo
	poolSaved      string
	stats          Stats
}

type poolInfo struct{ ref, uuid, name, master string }

type hostInfo struct{ uuid, name, address string }

type vifInfo struct{ vm, mac string }

type vmInfo struct {
	// Sequence numbers of the tracer's events: when the VM appeared, when its
	// power state or host last changed (from prevPower/prevResident), when
	// it was deleted, and which power change a record already explained.
	addSeq, powerSeq, delSeq, claimedSeq, modSeq int64
	// powerFrom is the VM's event before its last power or host change:
	// the change happened after it, at most at powerSeq (event.from shows
	// an object once, as last modified, so a change can surface well after
	// the task that made it ended).
	powerFrom               int64
	prevPower, prevResident string

	ref, uuid, name, power, resident, kind, snapshotOf string
	ops                                                map[string]string // task ref → vm operation
	importTask, guestMetrics                           string
	vifs                                               []string
	control, template                                  bool
}

// New returns a tracer writing into store.
func New(store *lineage.Store, log *slog.Logger) *Tracer {
	if log == nil {
		log = slog.Default()
	}
	t := &Tracer{store: store, log: log, changes: map[string]change{}, written: map[string]written{}, edges: map[string]edge{},
		savedTasks: map[string]string{}, savedChanges: map[string]bool{}, touchedTasks: map[string]bool{}, touchedChanges: map[string]bool{},
		live: map[string]bool{}, claimedLog: map[string]bool{}, started: time.Now()}
	t.reset()
	return t
}

func (t *Tracer) reset() {
	t.hosts = map[string]hostInfo{}
	t.vms = map[string]*vmInfo{}
	t.claimed = map[string]bool{}
	t.gone = map[string]*vmInfo{}
	t.goneFIFO = nil
	t.byUUID = map[string]string{}
	t.vifs = map[string]vifInfo{}
	t.gms = map[string][]string{}
	t.gmVM = map[string]string{}
	if t.tasks == nil {
		t.tasks = map[string]*taskInfo{}
	}
}

// Stats returns the counters.
func (t *Tracer) Stats() Stats { return t.stats }

// PoolUUID is the uuid of the pool being traced ("" before the first
// committed sync). Safe to call from any goroutine.
func (t *Tracer) PoolUUID() string {
	if p := t.synced.Load(); p != nil {
		return *p
	}
	return ""
}

// Token returns the persisted event token, and loads the tracer's persisted
// state (pool, pending tasks) on first use.
func (t *Tracer) Token(ctx context.Context) (string, error) {
	if err := t.load(ctx); err != nil {
		return "", err
	}
	return t.store.AgentState(ctx, KeyToken)
}

// Group commit: batches that arrive back to back are applied at once but
// committed together, when enough events gathered, when the oldest waited
// long enough, or when the watcher finds the pool quiet (Flush). Until then
// the store's token is the last committed one, so a killed agent replays
// those batches from it: nothing is lost, and ids keep replays from doubling.
// What a commit costs grows with the pages it rewrites (the live VMs' rows,
// index pages, pending tasks), not with its events, so the time bound is the
// one that matters at a pool's pace: at 4,096 events a busy pool committed
// four times a second and the commits cost 16% of the agent's CPU; at the
// one-second bound, 9% (BenchmarkTracePool). The event bound only keeps a
// catch-up's transactions at a size that commits in well under a second.
const (
	flushEvents = 1 << 15
	flushAfter  = time.Second
)

// Events applies one event.from batch; its token is persisted with its
// effects, now or at the next flush.
func (t *Tracer) Events(ctx context.Context, b *xapi.EventBatch) error {
	if err := t.load(ctx); err != nil {
		return err
	}
	t.delivered()
	catchUp := t.catchUp
	t.applyEvents(b.Events)
	t.openToken = b.Token
	t.stats.Events += int64(len(b.Events))
	t.stats.Batches++
	t.counts = b.ValidRefCounts
	if n, ok := b.ValidRefCounts["vm"]; ok && n > len(t.vms) && len(b.Events) > 0 {
		// More VMs in the pool than the tracer holds: adds are never
		// dropped, so its view is wrong (a fewer count is a dropped del,
		// which Reconcile repairs).
		if err := t.Flush(ctx); err != nil {
			return err
		}
		if catchUp {
			// Expected after every start: the view restored from the
			// store lacks what it never keeps (the control domains).
			t.log.Info("catch-up: the pool has VMs the stored view lacks, resyncing", "pool_vms", n, "tracked", len(t.vms))
		} else {
			t.log.Warn("VM count differs from the pool's", "pool_vms", n, "tracked", len(t.vms))
		}
		return xapi.ErrResyncNeeded
	}
	if t.openEvents >= flushEvents || time.Since(t.openSince) >= flushAfter {
		return t.Flush(ctx)
	}
	return nil
}

// applyEvents applies events in the order of the pool's changes and works
// out their records and VM facts, to be written at the next flush.
func (t *Tracer) applyEvents(evs []xapi.Event) {
	// XAPI groups a batch by add/mod/del, not by time; the event id is the
	// database generation of the change, so sorting by it restores order.
	sortByGen(evs)
	if t.open == nil {
		t.open, t.openSince, t.openEvents = newWrites(), time.Now(), 0
		t.open.vms, t.spareVMs = t.spareVMs, nil // a commit's worth of VM writes: reuse the room
	}
	bt := newBatch(t)
	debug := t.log.Enabled(context.Background(), slog.LevelDebug)
	for i := range evs {
		if debug {
			t.logEvent(&evs[i])
		}
		bt.apply(&evs[i])
	}
	if t.catchUp {
		// The catch-up after a start shows each object once, as it is now:
		// what it holds happened while nobody watched.
		t.gapSeq, t.catchUp = t.seq, false
	}
	// Records and VM facts are worked out now, from the state right after
	// this batch; only the writing waits for the group commit.
	t.prepare(bt, t.open)
	t.openEvents += len(evs)
}

// Pending reports whether applied batches wait to be committed.
func (t *Tracer) Pending() bool { return t.open != nil }

// Flush commits what Events applied; with nothing pending it still lets
// unexplained changes that waited long enough become records (a quiet pool
// sends no batches to carry them).
func (t *Tracer) Flush(ctx context.Context) error {
	if t.open == nil {
		if len(t.changes) == 0 || !t.loaded {
			return nil
		}
		return t.commit(ctx, newBatch(t), "")
	}
	w, token := t.open, t.openToken
	t.open, t.openToken = nil, ""
	if err := t.write(ctx, w, token); err != nil {
		// Kept for the next Flush: the tasks in it are marked recorded
		// already, so the batches asked again (the watcher's retry)
		// would not make their records a second time, and the batches
		// before them are not asked again at all.
		t.open, t.openToken = w, token
		return err
	}
	clear(w.vms)
	t.spareVMs = w.vms[:0]
	return nil
}

func (t *Tracer) logEvent(e *xapi.Event) {
	if s := e.Snapshot; s != nil {
		t.log.Debug("event", "id", e.ID, "class", e.Class, "op", e.Operation, "ref", e.Ref, "name", s.NameLabel,
			"uuid", s.UUID, "status", s.Status, "power", s.PowerState, "resident", s.ResidentOn, "ops", s.CurrentOperations, "result", s.Result, "error", s.ErrorInfo)
		return
	}
	t.log.Debug("event", "id", e.ID, "class", e.Class, "op", e.Operation, "ref", e.Ref)
}

// sortByGen sorts evs by generation, stably. Each id is parsed once, not
// at every comparison (that parsing was 1.6% of a busy pool's tracing), and an
// ordered batch is left as it is.
func sortByGen(evs []xapi.Event) {
	gens := make([]int64, len(evs))
	sorted := true
	for i := range evs {
		gens[i] = genOf(evs[i].ID)
		sorted = sorted && (i == 0 || gens[i] >= gens[i-1])
	}
	if !sorted {
		sort.Stable(byGen{evs, gens})
	}
}

type byGen struct {
	evs  []xapi.Event
	gens []int64
}

func (b byGen) Len() int           { return len(b.evs) }
func (b byGen) Less(i, j int) bool { return b.gens[i] < b.gens[j] }
func (b byGen) Swap(i, j int) {
	b.evs[i], b.evs[j] = b.evs[j], b.evs[i]
	b.gens[i], b.gens[j] = b.gens[j], b.gens[i]
}

func genOf(id string) int64 {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// observe moves the estimate of the pool's clock forward. XAPI's events
// carry no time, so record times come from the pool's task timestamps; a
// time the pool never stated (a task only seen vanishing) is estimated from
// the newest pool time seen, never from this machine's clock.
func (t *Tracer) observe(ts ...time.Time) {
	for _, x := range ts {
		if xapi.TimeSet(x) && x.After(t.serverAt) {
			t.serverAt = x.UTC()
		}
	}
}

// observeData is observe for times the applied data itself holds.
func (t *Tracer) observeData(ts ...time.Time) {
	t.observe(ts...)
	for _, x := range ts {
		if xapi.TimeSet(x) && x.After(t.seenAt) {
			t.seenAt = x.UTC()
		}
	}
}

// delivered notes that new data (an event batch, a resync's snapshot) is
// about to be applied: the clock readings taken before the one that came
// with it precede its fetch.
func (t *Tracer) delivered() {
	if t.readBefore.After(t.seenAt) {
		t.seenAt = t.readBefore
	}
	t.readBefore = t.read
}

// PoolTime is the newest time the pool has stated (task timestamps, its
// clock at the last resync): the reference for how far behind records are.
func (t *Tracer) PoolTime() time.Time { return t.now() }

// SetServerTime tells the tracer the pool's clock (host.get_servertime on
// the master), which dates what a resync finds before any task has.
// It is read after the data it comes with was fetched (see seenAt).
func (t *Tracer) SetServerTime(at time.Time) {
	t.observe(at)
	if xapi.TimeSet(at) && at.After(t.read) {
		t.read = at.UTC()
	}
}

func (t *Tracer) now() time.Time {
	if t.serverAt.IsZero() {
		return time.Now().UTC()
	}
	return t.serverAt
}

// MayName says whether the tracer may still name the new VM of r, a
// creation whose new VM is unknown: it has not yet seen the pool past r's
// end (another source's record, made while the tracer was away), or a VM
// that appeared under the name r gives is not yet matched to its making.
// The chain keeps such a record unsealed meanwhile (a sealed record is
// never completed). Safe to call from any goroutine.
func (t *Tracer) MayName(r *record.Record) bool {
	if names := t.pubAppear.Load(); names != nil && ((r.VMName != "" && (*names)[r.VMName]) || (*names)["id:"+r.ID]) {
		return true
	}
	if r.Source == record.SourceXAPI {
		return false // its own: made from what it saw
	}
	end := r.End
	if end.IsZero() {
		end = r.Start
	}
	c := t.pubContact.Load()
	return c == 0 || time.UnixMilli(c).Before(end.Add(sourceSlack))
}

// publish makes what MayName needs visible to other goroutines.
func (t *Tracer) publish() {
	if !t.contact.IsZero() {
		t.pubContact.Store(t.contact.UnixMilli())
	}
	names := map[string]bool{}
	for _, c := range t.changes {
		if c.Kind == "appear" && c.Name != "" {
			names[c.Name] = true
		}
	}
	for _, r := range t.awaitNew {
		names["id:"+r.ID] = true
	}
	t.pubAppear.Store(&names)
}

func (t *Tracer) hostUUID(ref string) string { return t.hosts[ref].uuid }

func (t *Tracer) masterUUID() string { return t.hosts[t.pool.master].uuid }

func kindOf(s *xapi.Snapshot) string {
	switch {
	case s.IsASnapshot:
		return lineage.KindSnapshot
	case s.IsATemplate:
		return lineage.KindTemplate
	}
	return lineage.KindVM
}
