package plugins_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

// The pinned file must be the file run: someone who can write the plugin
// directory (but not the pins) swaps the file by rename right after the
// k-th open of it at a start. Were the file hashed and then opened again
// by name to be run, one of these swaps would run the unpinned binary.
func TestPinnedFileIsTheFileRun(t *testing.T) {
	good := plugintest.Build(t, plugintest.TestDetector, "-X main.mode=ok")
	evil := plugintest.Build(t, plugintest.TestDetector, "-X main.mode=evil") // writes evil.pid when run
	for k := 1; k <= 3; k++ {
		t.Run(fmt.Sprintf("swap-after-open-%d", k), func(t *testing.T) {
			pidDir := t.TempDir()
			t.Setenv("VMLINEAGE_TESTDETECTOR_PIDDIR", pidDir)
			dir := t.TempDir()
			pin := plugintest.Install(t, good, dir, "det")
			evilCopy := filepath.Join(t.TempDir(), "evil")
			plugintest.Install(t, evil, filepath.Dir(evilCopy), "evil")
			stop := swapOnOpen(t, dir, "det", k, evilCopy)
			m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: map[string]string{"det": pin}}, newMem())
			if err != nil {
				t.Fatal(err)
			}
			m.Start(context.Background())
			swapped := stop()
			st := status(m, "det")
			name := detectorName(t, pidDir, "ok")
			m.Close()
			t.Logf("swapped %v; %s, info %q, last error %q", swapped, st.State, st.Info.Name, st.LastError)
			if _, err := os.Stat(filepath.Join(pidDir, "evil.pid")); err == nil || st.Info.Name == "test-evil" {
				t.Fatalf("a file whose sha256 is not the pinned one ran as detector det")
			}
			if st.State != plugins.StateRunning || st.Info.Name != "test-ok" {
				t.Fatalf("the pinned file did not run: %+v", st)
			}
			// Run from its descriptor, it still goes by its file's name.
			if want := "det " + filepath.Join(dir, "det"); name != want {
				t.Fatalf("process name and argv[0] %q, want %q", name, want)
			}
		})
	}
}

// detectorName returns the comm and argv[0] of the detector process of the
// given test mode.
func detectorName(t *testing.T, pidDir, mode string) string {
	t.Helper()
	proc := fmt.Sprintf("/proc/%d/", readPid(t, pidDir, mode))
	comm, err := os.ReadFile(proc + "comm")
	if err != nil {
		t.Fatal(err)
	}
	cmdline, err := os.ReadFile(proc + "cmdline")
	if err != nil {
		t.Fatal(err)
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	return strings.TrimSpace(string(comm)) + " " + argv0
}

// readPid returns the pid that the test detector of the given mode wrote
// at its start.
func readPid(t *testing.T, pidDir, mode string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pidDir, mode+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// swapOnOpen watches dir and renames src over dir/name right after the
// k-th open of dir/name. stop ends the watch and says whether it swapped.
func swapOnOpen(t *testing.T, dir, name string, k int, src string) (stop func() bool) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_OPEN); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify") // pollable: Close ends a blocked Read
	done := make(chan bool, 1)
	go func() {
		opens := 0
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			if err != nil {
				done <- false
				return
			}
			for off := 0; off < n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				got := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				off += unix.SizeofInotifyEvent + int(ev.Len)
				if string(bytes.TrimRight(got, "\x00")) == name {
					if opens++; opens == k {
						tmp := filepath.Join(dir, ".swap")
						os.Link(src, tmp)
						os.Rename(tmp, filepath.Join(dir, name))
						done <- true
						return
					}
				}
			}
		}
	}()
	return func() bool { f.Close(); return <-done }
}

// A detector file replaced after NewManager by something that is not a
// regular file (a FIFO, a symlink to /dev/zero) is refused at its start;
// reading it would block the start (and Start) for good.
func TestStartRefusesNonRegularFile(t *testing.T) {
	for _, kind := range []string{"fifo", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			dir, pins := plugintest.Setup(t, testDet("ok", "ok"))
			m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: pins}, newMem())
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "ok")
			os.Remove(p)
			if kind == "fifo" {
				err = syscall.Mkfifo(p, 0o755)
			} else {
				err = os.Symlink("/dev/zero", p)
			}
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { m.Start(context.Background()); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Cleanup(func() {
					os.Remove(p) // the symlink: the hash reads /dev/zero for good
					if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						f.Close()
					}
				})
				t.Fatalf("Start still blocked after 5s: state %s", status(m, "ok").State)
			}
			st := status(m, "ok")
			m.Close()
			if st.State == plugins.StateRunning || !strings.Contains(st.LastError, "regular file") {
				t.Fatalf("%+v", st)
			}
		})
	}
}
