package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildAgent builds the real command: the suite kills it as a process.
func buildAgent(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "vmlineage")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/vmlineage/vmlineage/cmd/vmlineage")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building vmlineage: %v\n%s", err, out)
	}
	return bin
}

// agentProc is the agent under test, one process at a time, each with its
// own log file (JSON lines on stderr).
type agentProc struct {
	t       *testing.T
	bin     string
	config  string
	logDir  string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	n       int
	started time.Time
}

func (a *agentProc) logPath(n int) string {
	return filepath.Join(a.logDir, fmt.Sprintf("agent-%03d.log", n))
}

// start runs a new agent process; the previous one must be gone.
func (a *agentProc) start() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		a.t.Errorf("agent started twice")
		return
	}
	a.n++
	lf, err := os.Create(a.logPath(a.n))
	if err != nil {
		a.t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(a.bin, "agent", "--config", a.config)
	cmd.Stdout, cmd.Stderr = lf, lf
	// The agent must not outlive a test that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		a.t.Fatalf("starting the agent: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	a.cmd, a.done, a.started = cmd, done, time.Now()
}

// kill SIGKILLs the running agent and waits for it to be gone.
func (a *agentProc) kill() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		a.t.Errorf("agent %d had exited by itself before the kill: %s", a.n, a.tail(a.n))
	default:
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	a.cmd = nil
	return true
}

// stop ends the agent with SIGTERM (shutdown checkpoint, outputs drained)
// and returns its exit error.
func (a *agentProc) stop(timeout time.Duration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return nil
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(timeout):
		// SIGQUIT first: the Go runtime writes every goroutine to the
		// agent's log and exits, which shows where the shutdown hangs.
		a.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-a.done:
		case <-time.After(5 * time.Second):
			a.cmd.Process.Signal(syscall.SIGKILL)
			<-a.done
		}
		a.cmd = nil
		return fmt.Errorf("the agent did not stop within %s of SIGTERM (its goroutines are at the end of %s)", timeout, a.logPath(a.n))
	}
	err := a.cmd.ProcessState
	a.cmd = nil
	if !err.Success() {
		return fmt.Errorf("the agent exited with %s: %s", err, a.tail(a.n))
	}
	return nil
}

// alive reports whether the current process still runs (it must: the
// agent exits only when told to).
func (a *agentProc) alive() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

func (a *agentProc) current() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

func (a *agentProc) tail(n int) string {
	b, _ := os.ReadFile(a.logPath(n))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// logLine is one line of the agent's JSON log.
type logLine map[string]any

func (l logLine) msg() string { s, _ := l["msg"].(string); return s }
func (l logLine) str(k string) string {
	s, _ := l[k].(string)
	return s
}

// logs reads the log of process n (a killed process may leave a torn last
// line: it is skipped).
func (a *agentProc) logs(n int) []logLine {
	f, err := os.Open(a.logPath(n))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// logged counts the lines of every process's log for which match holds.
func (a *agentProc) logged(match func(logLine) bool) int {
	n := 0
	for i := 1; i <= a.current(); i++ {
		for _, l := range a.logs(i) {
			if match(l) {
				n++
			}
		}
	}
	return n
}

// problems are the error lines of every log, and the panics (a process
// that panicked has a "panic:" or "fatal error:" line that is not JSON).
func (a *agentProc) problems() []string {
	var out []string
	for i := 1; i <= a.current(); i++ {
		b, _ := os.ReadFile(a.logPath(i))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") {
				out = append(out, fmt.Sprintf("agent %d: %s", i, line))
			}
			if strings.Contains(line, `"level":"ERROR"`) {
				out = append(out, fmt.Sprintf("agent %d: %s", i, line))
			}
		}
	}
	return out
}
