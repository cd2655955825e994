package alerts

import (
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	t.Setenv("GOGC", "")
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	restore := TuneGC()
	if p := debug.SetGCPercent(GCPercent); p != GCPercent {
		t.Errorf("GOGC %d after TuneGC, want %d", p, GCPercent)
	}
	restore()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC %d after restore, want 100 back", p)
	}

	t.Setenv("GOGC", "200") // the operator's choice
	debug.SetGCPercent(200)
	restore = TuneGC()
	if p := debug.SetGCPercent(200); p != 200 {
		t.Errorf("GOGC %d with GOGC=200 in the environment, want it left alone", p)
	}
	restore()
}
