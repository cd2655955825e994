package plugins

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Time-outs and answers of calls made to a process since replaced say
// nothing of the process now running: calls to the old one that time out
// after the restart must not count towards the new one's HungLimit (which
// would kill it on its first slow call), nor may a late answer from the
// old one clear the new one's count.
func TestStaleCallsDoNotCount(t *testing.T) {
	m, err := NewManager(Config{}, nopLineage{}) // HungLimit 2
	if err != nil {
		t.Fatal(err)
	}
	timeout := func(context.Context, *DetectorClient) Result { return Result{Err: context.DeadlineExceeded} }
	answer := func(context.Context, *DetectorClient) Result { return Result{} }
	old, cur := &DetectorClient{}, &DetectorClient{}
	newRunner := func() *runner {
		return &runner{m: m, name: "d", state: StateRunning, det: cur, timeouts: map[string]int{}}
	}

	r := newRunner()
	r.call(context.Background(), CallEnrich, old, timeout)
	r.call(context.Background(), CallEnrich, old, timeout)
	r.call(context.Background(), CallEnrich, cur, timeout) // its first
	if r.state != StateRunning || r.det != cur {
		t.Errorf("killed after one time-out of its own and two of the process before it: %s, %v", r.state, r.lastErr)
	}

	r = newRunner()
	r.call(context.Background(), CallEnrich, cur, timeout)
	r.call(context.Background(), CallEnrich, old, answer)
	r.call(context.Background(), CallEnrich, cur, timeout)
	if r.state != StateBackoff {
		t.Errorf("two time-outs in a row, with only an answer of the process before it between: %s", r.state)
	}
}

// One slow call of each kind, with answers of the other kind between, is
// two slow calls, not a hung process: HungLimit holds per kind. Two
// Enrich time-outs in a row still kill it, whatever OnRecord answers.
func TestHungLimitPerKind(t *testing.T) {
	m, err := NewManager(Config{}, nopLineage{}) // HungLimit 2
	if err != nil {
		t.Fatal(err)
	}
	timeout := func(context.Context, *DetectorClient) Result { return Result{Err: context.DeadlineExceeded} }
	answer := func(context.Context, *DetectorClient) Result { return Result{} }
	cur := &DetectorClient{}
	r := &runner{m: m, name: "d", state: StateRunning, det: cur, timeouts: map[string]int{}}
	r.call(context.Background(), CallEnrich, cur, timeout)
	r.call(context.Background(), CallOnRecord, cur, answer)
	r.call(context.Background(), CallOnRecord, cur, timeout)
	if r.state != StateRunning {
		t.Fatalf("killed after one slow Enrich and one slow OnRecord: %s, %v", r.state, r.lastErr)
	}
	r.call(context.Background(), CallOnRecord, cur, answer)
	r.call(context.Background(), CallEnrich, cur, timeout)
	if r.state != StateBackoff {
		t.Errorf("two Enrich time-outs with only OnRecord answers between: %s", r.state)
	}
}

// A detector that ran for longer than CrashLoopWindow restarts after
// MinBackoff again when it fails, whether or not a call to it ever
// succeeded (its Needs may skip every call); a start failing after that
// backs off further.
func TestBackoffResetByUptime(t *testing.T) {
	m, err := NewManager(Config{}, nopLineage{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.cfg
	r := &runner{m: m, name: "d", state: StateRunning, timeouts: map[string]int{},
		backoff: cfg.MaxBackoff, upSince: time.Now().Add(-cfg.CrashLoopWindow - time.Minute)}
	r.failLocked(errors.New("crashed"))
	if r.backoff != cfg.MinBackoff {
		t.Errorf("after a long run: back-off %s, want %s", r.backoff, cfg.MinBackoff)
	}
	r.state = StateStarting
	r.failLocked(errors.New("start failed"))
	if r.backoff != 2*cfg.MinBackoff {
		t.Errorf("a failed start after it: back-off %s, want %s", r.backoff, 2*cfg.MinBackoff)
	}
}

type nopLineage struct{ Lineage }
