package plugins_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
	pb "github.com/vmlineage/vmlineage/plugins/proto"
)

// A call of exactly the 4 MiB message limit before its id is set goes over
// it with the id: it must fail alone, with the limit's error, and not go
// out, make the detector's Recv fail and end the stream for the calls in
// flight beside it.
func TestEnrichStreamCallAtLimitFailsAlone(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("echo", "echo"))
	m := newManager(t, dir, pins, func(c *plugins.Config) { c.CallTimeout = 5 * time.Second })
	a := *alert
	a.ID = "big"
	size := func(n int) int { // what the host encodes, but the id
		return proto.Size(&pb.EnrichCall{TimeoutMs: 5000, Request: &pb.EnrichRequest{Alert: &pb.Alert{Id: a.ID, TimeMs: a.Time.UnixMilli(),
			EcsJson: make([]byte, n), Vms: []*pb.AlertVM{{VmUuid: "a", MatchedField: "host.name", MatchedValue: "vm-a"}}}}})
	}
	n := 4 << 20
	for size(n) > 4<<20 {
		n--
	}
	if size(n) != 4<<20 {
		t.Fatalf("cannot hit the limit exactly: %d", size(n))
	}
	a.ECS = []byte(strings.Repeat("x", n))

	var wg sync.WaitGroup
	good := make([][]plugins.Result, 20)
	for i := range good {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := *alert
			g.ID = strconv.Itoa(30 + i) // echo answers after 30..49 ms
			good[i] = m.Enrich(context.Background(), &g)
		}()
	}
	time.Sleep(5 * time.Millisecond)
	r := results(m.Enrich(context.Background(), &a))["echo"]
	if r.Err == nil || !strings.Contains(r.Err.Error(), "message limit") {
		t.Errorf("the call at the limit: want the limit's error, got %v", r.Err)
	}
	wg.Wait()
	for i, rs := range good {
		if len(rs) != 1 || rs[0].Err != nil || rs[0].Enrichment == nil || rs[0].Enrichment.Notes[0] != "id "+strconv.Itoa(30+i) {
			t.Errorf("a call beside it: %+v", rs)
		}
	}
	if st := status(m, "echo"); st.Starts != 1 || st.Transport != "stream" {
		t.Errorf("%+v, want the first process still running on its stream", st)
	}
}
