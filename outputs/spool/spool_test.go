package spool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/outputs/file"
)

func item(i int) outputs.Item {
	return outputs.Item{ID: fmt.Sprintf("r%08d", i), Payload: []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", i%97))), Time: time.Unix(1764064800, int64(i)*1000).UTC()}
}

func items(from, n int) []outputs.Item {
	out := make([]outputs.Item, n)
	for i := range out {
		out[i] = item(from + i)
	}
	return out
}

// drain reads everything currently readable, acking as it goes.
func drain(t *testing.T, s *Spool) []outputs.Item {
	t.Helper()
	var got []outputs.Item
	for s.Stats().Records > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		b, err := s.Read(ctx, 37, 0)
		cancel()
		if err != nil {
			t.Fatalf("read: %v (stats %+v)", err, s.Stats())
		}
		got = append(got, b.Items...)
		if err := s.Ack(b); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

func TestRoundTripAcrossSegmentsAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: 4096, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 1000; i += 10 {
		if err := s.Append(ctx, items(i, 10)); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Records != 1000 || st.Segments < 5 {
		t.Fatalf("stats %+v", st)
	}
	// Consume 400 with ack, read 100 more without ack, then "crash" (close).
	var got []outputs.Item
	for len(got) < 400 {
		b, err := s.Read(ctx, 400-len(got), 0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b.Items...)
		if err := s.Ack(b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Read(ctx, 100, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir, Options{SegmentBytes: 4096, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st.Records != 600 {
		t.Fatalf("after reopen want 600 pending, got %+v", st)
	}
	got = append(got, drain(t, s)...)
	if len(got) != 1000 {
		t.Fatalf("got %d items", len(got))
	}
	for i, it := range got {
		w := item(i)
		if it.ID != w.ID || string(it.Payload) != string(w.Payload) || !it.Time.Equal(w.Time) {
			t.Fatalf("item %d: got %+v want %+v", i, it, w)
		}
	}
	st := s.Stats()
	if st.Segments != 1 || st.Bytes > 4096 {
		t.Fatalf("consumed segments not deleted: %+v", st)
	}
}

func TestTornTailIsCut(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(context.Background(), items(0, 5)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A crash mid-write leaves half a frame (and garbage) at the end.
	seg := filepath.Join(dir, segName(1))
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	half := appendFrame(nil, item(5))
	f.Write(half[:len(half)/2])
	f.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st.Records != 5 || st.CorruptBytes != int64(len(half)/2) {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Append(context.Background(), items(5, 1)); err != nil {
		t.Fatal(err)
	}
	got := drain(t, s)
	if len(got) != 6 || got[5].ID != item(5).ID {
		t.Fatalf("got %d items after recovery", len(got))
	}
}

func TestFullPolicies(t *testing.T) {
	ctx := context.Background()
	one := int64(len(appendFrame(nil, item(1))))
	t.Run("reject", func(t *testing.T) {
		s, err := Open(t.TempDir(), Options{MaxBytes: 16 << 10, SegmentBytes: 4096, WhenFull: Reject})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		n := 0
		for ; ; n++ {
			if err := s.Append(ctx, []outputs.Item{item(1)}); err != nil {
				if !errors.Is(err, ErrFull) {
					t.Fatal(err)
				}
				break
			}
		}
		if int64(n) != (16<<10)/one || s.Stats().FullRejects != 1 {
			t.Fatalf("accepted %d, stats %+v", n, s.Stats())
		}
	})
	t.Run("block", func(t *testing.T) {
		s, err := Open(t.TempDir(), Options{MaxBytes: 16 << 10, SegmentBytes: 4096})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		const total = 2000
		done := make(chan error, 1)
		go func() {
			for i := 0; i < total; i++ {
				if err := s.Append(ctx, []outputs.Item{item(i)}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		// The producer must stall: the spool holds far fewer than 2000. Wait
		// for the first full wait (a loaded machine may take a while to
		// fill 16 KiB), then check it stays stalled.
		deadline := time.Now().Add(20 * time.Second)
		for s.Stats().FullWaits == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		if st := s.Stats(); st.Records >= total || st.FullWaits == 0 || st.Bytes > 16<<10 {
			t.Fatalf("producer not blocked: %+v", st)
		}
		var got []outputs.Item
		for len(got) < total {
			b, err := s.Read(ctx, 50, 0)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b.Items...)
			s.Ack(b)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		for i, it := range got {
			if it.ID != item(i).ID {
				t.Fatalf("order broken at %d", i)
			}
		}
		// A cancelled wait is a clear error.
		for s.Append(ctx, []outputs.Item{item(0)}) == nil && s.Stats().Bytes+one <= 16<<10 {
		}
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if err := s.Append(cctx, []outputs.Item{item(0)}); !errors.Is(err, ErrFull) {
			t.Fatalf("want ErrFull after cancel, got %v", err)
		}
	})
	t.Run("drop-oldest", func(t *testing.T) {
		s, err := Open(t.TempDir(), Options{MaxBytes: 16 << 10, SegmentBytes: 4096, WhenFull: DropOldest})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		const total = 1000
		for i := 0; i < total; i++ {
			if err := s.Append(ctx, []outputs.Item{item(i)}); err != nil {
				t.Fatal(err)
			}
		}
		st := s.Stats()
		if st.Bytes > 16<<10 || st.Dropped == 0 || int64(st.Dropped)+st.Records != total {
			t.Fatalf("stats %+v", st)
		}
		got := drain(t, s)
		if int64(len(got)) != total-int64(st.Dropped) || got[len(got)-1].ID != item(total-1).ID {
			t.Fatalf("got %d, last %s", len(got), got[len(got)-1].ID)
		}
	})
}

// TestDiskFull fills a tiny tmpfs: Append fails with a clear error, nothing
// stored before is damaged, and the spool works again once space is freed.
// TestBigAppendWhenFull: an Append almost as large as the spool waits for
// the consumer and then goes in, even though the write segment was never full.
func TestBigAppendWhenFull(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxBytes: 64 << 10, SegmentBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Append(ctx, items(0, 20)); err != nil {
		t.Fatal(err)
	}
	big := []outputs.Item{{ID: "big", Payload: make([]byte, 63<<10)}}
	done := make(chan error, 1)
	go func() { done <- s.Append(ctx, big) }()
	time.Sleep(100 * time.Millisecond)
	if st := s.Stats(); st.FullWaits != 1 || st.Records != 20 {
		t.Fatalf("big Append did not wait: %+v", st)
	}
	var got []outputs.Item
	for len(got) < 21 {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		b, err := s.Read(rctx, 100, 0)
		cancel()
		if err != nil {
			t.Fatalf("big Append still blocked: %v %+v", err, s.Stats())
		}
		got = append(got, b.Items...)
		s.Ack(b)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got[20].ID != "big" || len(got[20].Payload) != 63<<10 {
		t.Fatalf("last is %s", got[20].ID)
	}
}

func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "tiny")
	os.Mkdir(mnt, 0o755)
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot mount a tmpfs for the disk-full test (needs root/CAP_SYS_ADMIN): %v", err)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	s, err := Open(filepath.Join(mnt, "spool"), Options{MaxBytes: 64 << 20, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stored := 0
	var werr error
	for i := 0; i < 100000; i += 20 {
		if werr = s.Append(ctx, items(i, 20)); werr != nil {
			break
		}
		stored += 20
	}
	if werr == nil || !strings.Contains(werr.Error(), "disk full") || !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("want a disk-full error, got %v", werr)
	}
	if stored == 0 || s.Stats().WriteErrors == 0 {
		t.Fatalf("stored %d, stats %+v", stored, s.Stats())
	}
	// Free space by consuming half, then appending works again.
	var got []outputs.Item
	for len(got) < stored/2 {
		b, err := s.Read(ctx, 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b.Items...)
		if err := s.Ack(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Append(ctx, items(stored, 1)); err != nil {
		// Space may still be short when all freed segments were small; that is
		// fine as long as the error is clear.
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatal(err)
		}
	} else {
		stored++
	}
	s.Close()
	// Reopen: every record that was acknowledged is there, in order, no damage.
	s, err = Open(filepath.Join(mnt, "spool"), Options{MaxBytes: 64 << 20, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st.CorruptBytes != 0 {
		t.Fatalf("damage after disk full: %+v", st)
	}
	got = append(got, drain(t, s)...)
	if len(got) != stored {
		t.Fatalf("stored %d, read back %d", stored, len(got))
	}
	for i, it := range got {
		if it.ID != item(i).ID {
			t.Fatalf("item %d is %s", i, it.ID)
		}
	}
}

func TestGroupCommit(t *testing.T) {
	s, err := Open(t.TempDir(), Options{SyncInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func(g int) {
			var err error
			for i := 0; i < 50 && err == nil; i++ {
				err = s.Append(ctx, items(g*1000+i, 1))
			}
			errs <- err
		}(g)
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := drain(t, s); len(got) != 400 {
		t.Fatalf("got %d", len(got))
	}
}

// --- SIGKILL tests: the test binary re-runs itself as the agent. ---

func TestMain(m *testing.M) {
	switch os.Getenv("SPOOL_CHILD") {
	case "producer":
		childProducer()
		return
	case "shipper":
		childShipper()
		return
	}
	os.Exit(m.Run())
}

// childProducer appends records from START on, printing "ACK n" once
// record n is acknowledged by Append, until killed.
func childProducer() {
	dir := os.Getenv("SPOOL_DIR")
	start, _ := strconv.Atoi(os.Getenv("START"))
	sync, _ := time.ParseDuration(os.Getenv("SYNC"))
	s, err := Open(dir, Options{SegmentBytes: 8192, MaxBytes: 64 << 20, SyncInterval: sync})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := start; ; {
		n := 1 + rand.IntN(40)
		if err := s.Append(context.Background(), items(i, n)); err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		i += n
		fmt.Fprintf(w, "ACK %d\n", i-1)
		w.Flush()
	}
}

// childShipper ships the spool into a fsynced JSON-lines file until killed.
func childShipper() {
	s, err := Open(os.Getenv("SPOOL_DIR"), Options{SegmentBytes: 8192, MaxBytes: 64 << 20})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	out, err := file.New(file.Config{Path: os.Getenv("OUT"), MaxBytes: 1 << 30})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	sh := &Shipper{Spool: s, Output: out, BatchSize: 1 + rand.IntN(64)}
	go func() {
		for s.Stats().Records > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Println("DRAINED")
		os.Exit(0)
	}()
	sh.Run(context.Background())
}

func runChild(t *testing.T, env []string, killAfter time.Duration) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(killAfter):
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
	if strings.Contains(out.String(), "ERR") {
		t.Fatalf("child failed: %s", out.String())
	}
	return out.String()
}

// TestSIGKILLProducer kills an appending process at random moments 25 times:
// every record Append acknowledged is in the spool afterwards, in order.
func TestSIGKILLProducer(t *testing.T) {
	dir := t.TempDir()
	last := -1
	for round := 0; round < 25; round++ {
		sync := "0"
		if round%2 == 1 {
			sync = "3ms"
		}
		out := runChild(t, []string{"SPOOL_CHILD=producer", "SPOOL_DIR=" + dir, "START=" + strconv.Itoa(last+1), "SYNC=" + sync},
			time.Duration(30+rand.IntN(150))*time.Millisecond)
		for _, l := range strings.Split(out, "\n") {
			if n, ok := strings.CutPrefix(l, "ACK "); ok {
				last, _ = strconv.Atoi(n)
			}
		}
	}
	if last < 100 {
		t.Fatalf("children acknowledged only %d records", last+1)
	}
	s, err := Open(dir, Options{SegmentBytes: 8192, MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := drain(t, s)
	// Records past an ACK may be there too (written, not yet acknowledged,
	// then produced again): at-least-once. Every acknowledged one must be.
	seen := map[string]bool{}
	for _, it := range got {
		w := item(mustAtoi(t, it.ID[1:]))
		if string(it.Payload) != string(w.Payload) {
			t.Fatalf("record %s damaged: %q", it.ID, it.Payload)
		}
		seen[it.ID] = true
	}
	for i := 0; i <= last; i++ {
		if !seen[item(i).ID] {
			t.Fatalf("acknowledged record %d lost (of %d)", i, last+1)
		}
	}
	t.Logf("%d acknowledged records survived 25 SIGKILLs (%d read back, torn bytes cut %d)", last+1, len(got), s.Stats().CorruptBytes)
}

// TestSIGKILLShipper kills a shipping process at random moments 20 times:
// every spooled record reaches the output.
func TestSIGKILLShipper(t *testing.T) {
	dir := t.TempDir()
	outPath := filepath.Join(t.TempDir(), "out.jsonl")
	const total = 20000
	s, err := Open(dir, Options{SegmentBytes: 8192, MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < total; i += 100 {
		if err := s.Append(context.Background(), items(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	for round := 0; round < 20; round++ {
		runChild(t, []string{"SPOOL_CHILD=shipper", "SPOOL_DIR=" + dir, "OUT=" + outPath}, time.Duration(10+rand.IntN(60))*time.Millisecond)
	}
	// Let a last run finish the job.
	if out := runChild(t, []string{"SPOOL_CHILD=shipper", "SPOOL_DIR=" + dir, "OUT=" + outPath}, 60*time.Second); !strings.Contains(out, "DRAINED") {
		t.Fatalf("last run did not drain the spool: %s", out)
	}
	s, err = Open(dir, Options{SegmentBytes: 8192, MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 0 {
		t.Fatalf("spool not drained: %+v", st)
	}
	s.Close()
	b, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for _, l := range lines {
		count[l]++
	}
	dups := 0
	for i := 0; i < total; i++ {
		c := count[string(item(i).Payload)]
		if c == 0 {
			t.Fatalf("record %d never delivered", i)
		}
		dups += c - 1
	}
	if len(lines) != total+dups {
		t.Fatalf("%d lines, %d expected + %d duplicates: stray lines", len(lines), total, dups)
	}
	t.Logf("%d records delivered through 20 SIGKILLs, %d duplicates (at-least-once window)", total, dups)
}

func mustAtoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
