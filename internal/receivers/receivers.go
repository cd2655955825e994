// Package receivers starts real log receivers (rsyslog, syslog-ng,
// VictoriaLogs) for the outputs' tests: on free 127.0.0.1 ports, in a test's
// temporary directory, stopped when the test ends. Install them with
// scripts/receivers/install.sh. When CI=true a missing receiver fails the
// test; otherwise the test is skipped with the command to run.
package receivers

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Missing fails (CI=true) or skips the test because a receiver is absent.
func Missing(t testing.TB, what string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s not available (%v); install with: bash scripts/receivers/install.sh", what, err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// CacheBin is where install.sh puts binaries.
func CacheBin() string {
	if c := os.Getenv("VMLINEAGE_CACHE"); c != "" {
		return filepath.Join(c, "bin")
	}
	h, _ := os.UserHomeDir()
	return filepath.Join(h, ".cache", "vmlineage", "bin")
}

// Find returns the path of a program: $env if set, the cache, then PATH.
func Find(name, env string) (string, error) {
	if env != "" {
		if p := os.Getenv(env); p != "" {
			return p, nil
		}
	}
	if p := filepath.Join(CacheBin(), name); isExec(p) {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); isExec(p) {
			return p, nil
		}
	}
	return exec.LookPath(name)
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// FreePort returns a port free for both TCP and UDP on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// proc is a receiver process that can be stopped and started again with the
// same arguments (outage tests).
type proc struct {
	t     testing.TB
	name  string
	args  []string
	env   []string
	log   string
	cmd   *exec.Cmd
	ready func() error
}

func (p *proc) start() {
	p.t.Helper()
	lf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		p.t.Fatalf("starting %s: %v", p.name, err)
	}
	lf.Close()
	p.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			b, _ := os.ReadFile(p.log)
			p.stop()
			p.t.Fatalf("%s did not become ready: %v\n%s", p.name, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
}

func dialReady(network, addr string) func() error {
	return func() error {
		c, err := net.DialTimeout(network, addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// Rsyslog is a running rsyslogd with UDP and TCP on one port and TLS (gtls
// and ossl drivers) on two others. Every message is written as one JSON
// object per line to Out; CEF messages are also parsed by mmnormalize
// (liblognorm) into Parsed.
type Rsyslog struct {
	Dir     string
	UDPAddr string
	TCPAddr string
	TLSAddr string // gtls driver
	OSSL    string // ossl driver
	CAFile  string // self-signed cert of "localhost"/127.0.0.1
	Out     string
	Parsed  string
	p       *proc
}

// RsyslogMessage is one line of Rsyslog.Out.
type RsyslogMessage struct {
	Input    string `json:"input"`
	Host     string `json:"host"`
	App      string `json:"app"`
	ProcID   string `json:"procid"`
	MsgID    string `json:"msgid"`
	SD       string `json:"sd"`
	Time     string `json:"time"`
	Facility string `json:"facility"`
	Severity string `json:"severity"`
	Msg      string `json:"msg"`
	Raw      string `json:"raw"`
}

// RsyslogOptions tune StartRsyslogWith.
type RsyslogOptions struct {
	// NoCEFParse skips mmnormalize (benchmarks measure transport, not
	// liblognorm).
	NoCEFParse bool
}

// StartRsyslog starts rsyslogd; it stops when the test ends.
func StartRsyslog(t testing.TB) *Rsyslog {
	t.Helper()
	return StartRsyslogWith(t, RsyslogOptions{})
}

// StartRsyslogWith starts rsyslogd with options.
func StartRsyslogWith(t testing.TB, opt RsyslogOptions) *Rsyslog {
	t.Helper()
	bin, err := Find("rsyslogd", "RSYSLOGD")
	if err != nil {
		Missing(t, "rsyslogd", err)
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"); err != nil {
		if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
			Missing(t, "rsyslog-gnutls", err)
		}
	}
	dir := t.TempDir()
	r := &Rsyslog{Dir: dir, Out: filepath.Join(dir, "out.jsonl"), Parsed: filepath.Join(dir, "parsed.jsonl")}
	key, cert := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	if err := SelfSigned(cert, key); err != nil {
		t.Fatal(err)
	}
	r.CAFile = cert
	port, tlsPort, osslPort := FreePort(t), FreePort(t), FreePort(t)
	r.UDPAddr = fmt.Sprintf("127.0.0.1:%d", port)
	r.TCPAddr = r.UDPAddr
	r.TLSAddr = fmt.Sprintf("127.0.0.1:%d", tlsPort)
	r.OSSL = fmt.Sprintf("127.0.0.1:%d", osslPort)
	os.WriteFile(filepath.Join(dir, "cef.rb"), []byte("version=2\nrule=:%cef:cef%\nrule=: %cef:cef%\n"), 0o644)
	os.Mkdir(filepath.Join(dir, "rs"), 0o755)
	conf := fmt.Sprintf(`global(workDirectory="%[1]s/rs" maxMessageSize="256k"
       parser.escapeControlCharactersOnReceive="off"
       defaultNetstreamDriverCAFile="%[2]s"
       defaultNetstreamDriverCertFile="%[2]s"
       defaultNetstreamDriverKeyFile="%[3]s")
module(load="imudp")
module(load="imtcp" maxSessions="200")
module(load="mmnormalize")
input(type="imudp" address="127.0.0.1" port="%[4]d" ruleset="recv")
input(type="imtcp" address="127.0.0.1" port="%[4]d" ruleset="recv")
input(type="imtcp" address="127.0.0.1" port="%[5]d" ruleset="recv" name="tls-gtls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="%[6]d" ruleset="recv" name="tls-ossl"
      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="j" type="string" string="{\"input\":\"%%inputname%%\",\"host\":\"%%hostname:::json%%\",\"app\":\"%%app-name:::json%%\",\"procid\":\"%%procid:::json%%\",\"msgid\":\"%%msgid:::json%%\",\"sd\":\"%%structured-data:::json%%\",\"time\":\"%%timereported:::date-rfc3339%%\",\"facility\":\"%%syslogfacility%%\",\"severity\":\"%%syslogseverity%%\",\"msg\":\"%%msg:::json%%\",\"raw\":\"%%rawmsg:::json%%\"}\n")
template(name="alljson" type="string" string="%%$!all-json%%\n")
ruleset(name="recv") {
  action(type="omfile" file="%[7]s" template="j")
  if (%[9]d == 1 and $msg contains "CEF:") then {
    action(type="mmnormalize" rulebase="%[1]s/cef.rb" useRawMsg="off")
    set $!meta!app = $app-name;
    set $!meta!msgid = $msgid;
    action(type="omfile" file="%[8]s" template="alljson")
  }
}
`, dir, cert, key, port, tlsPort, osslPort, r.Out, r.Parsed, map[bool]int{false: 1, true: 0}[opt.NoCEFParse])
	confPath := filepath.Join(dir, "rsyslog.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	if out, err := exec.Command(bin, "-N1", "-f", confPath).CombinedOutput(); err != nil {
		t.Fatalf("rsyslog config check: %v\n%s", err, out)
	}
	r.p = &proc{t: t, name: "rsyslogd", log: filepath.Join(dir, "rsyslogd.log"),
		args:  []string{bin, "-n", "-f", confPath, "-i", filepath.Join(dir, "rs", "rsyslogd.pid")},
		ready: dialReady("tcp", r.TCPAddr)}
	r.p.start()
	t.Cleanup(r.Stop)
	return r
}

// Stop stops rsyslogd (it flushes its files first).
func (r *Rsyslog) Stop() {
	r.p.stop()
	os.Remove(filepath.Join(r.Dir, "rs", "rsyslogd.pid"))
}

// Start starts it again on the same ports.
func (r *Rsyslog) Start() { r.p.start() }

// Messages reads what rsyslog wrote so far.
func (r *Rsyslog) Messages(t testing.TB) []RsyslogMessage {
	t.Helper()
	return readJSONL[RsyslogMessage](t, r.Out)
}

// ParsedCEF reads mmnormalize's output: one object per CEF message.
func (r *Rsyslog) ParsedCEF(t testing.TB) []map[string]any {
	t.Helper()
	return readJSONL[map[string]any](t, r.Parsed)
}

// WaitMessages polls until at least n messages arrived or timeout.
func (r *Rsyslog) WaitMessages(t testing.TB, n int, timeout time.Duration) []RsyslogMessage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := r.Messages(t)
		if len(m) >= n || time.Now().After(deadline) {
			return m
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readJSONL[T any](t testing.TB, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(line, &v); err != nil {
			// A line still being written; the next poll sees it whole.
			if !bytes.HasSuffix(line, []byte("}")) {
				break
			}
			t.Fatalf("%s: bad line %q: %v", path, line, err)
		}
		out = append(out, v)
	}
	return out
}

// SelfSigned writes a self-signed certificate for localhost and 127.0.0.1.
func SelfSigned(certFile, keyFile string) error {
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile,
		"-out", certFile, "-days", "2", "-subj", "/CN=localhost",
		"-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1").CombinedOutput()
	if err != nil {
		return fmt.Errorf("openssl: %v: %s", err, out)
	}
	return nil
}

// SyslogNG is syslog-ng 3.x with an octet-counting syslog() TCP source;
// each message becomes one JSON line in Out.
type SyslogNG struct {
	Dir     string
	TCPAddr string
	Out     string
	p       *proc
}

// SyslogNGMessage is one line of SyslogNG.Out.
type SyslogNGMessage struct {
	Host    string `json:"host"`
	Program string `json:"program"`
	PID     string `json:"pid"`
	MsgID   string `json:"msgid"`
	Msg     string `json:"msg"`
	SDID    string `json:"sdid"`
}

// StartSyslogNG starts syslog-ng; it stops when the test ends.
func StartSyslogNG(t testing.TB) *SyslogNG {
	t.Helper()
	bin, err := Find("syslog-ng", "SYSLOG_NG")
	if err != nil {
		Missing(t, "syslog-ng", err)
	}
	dir := t.TempDir()
	s := &SyslogNG{Dir: dir, Out: filepath.Join(dir, "out.jsonl")}
	port := FreePort(t)
	s.TCPAddr = fmt.Sprintf("127.0.0.1:%d", port)
	ver := "3.38"
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "Config version: "); ok {
				ver = strings.TrimSpace(v)
			}
		}
	}
	conf := fmt.Sprintf(`@version: %s
options { keep-hostname(yes); stats-freq(0); log-msg-size(262144); };
source s_ietf { syslog(ip("127.0.0.1") port(%d) transport("tcp") max-connections(100) log-msg-size(262144)); };
destination d { file("%s" template("$(format-json host=${HOST} program=${PROGRAM} pid=${PID} msgid=${MSGID} msg=${MESSAGE} sdid=${.SDATA.vmlineage@32473.id})\n")); };
log { source(s_ietf); destination(d); };
`, ver, port, s.Out)
	confPath := filepath.Join(dir, "sng.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	if out, err := exec.Command(bin, "-f", confPath, "-s").CombinedOutput(); err != nil {
		t.Fatalf("syslog-ng config check: %v\n%s", err, out)
	}
	s.p = &proc{t: t, name: "syslog-ng", log: filepath.Join(dir, "sng.log"),
		args: []string{bin, "-f", confPath, "-F", "-e", "-R", filepath.Join(dir, "sng.persist"),
			"-p", filepath.Join(dir, "sng.pid"), "-c", filepath.Join(dir, "sng.ctl")},
		ready: dialReady("tcp", s.TCPAddr)}
	s.p.start()
	t.Cleanup(s.p.stop)
	return s
}

// Messages reads what syslog-ng wrote so far.
func (s *SyslogNG) Messages(t testing.TB) []SyslogNGMessage {
	t.Helper()
	return readJSONL[SyslogNGMessage](t, s.Out)
}

// WaitMessages polls until at least n messages arrived or timeout.
func (s *SyslogNG) WaitMessages(t testing.TB, n int, timeout time.Duration) []SyslogNGMessage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := s.Messages(t)
		if len(m) >= n || time.Now().After(deadline) {
			return m
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// VictoriaLogs is a running victoria-logs: ES bulk API under ESURL, syslog
// (TCP octet-counted and UDP) on SyslogAddr, LogsQL at URL.
type VictoriaLogs struct {
	Dir        string
	URL        string
	ESURL      string
	SyslogAddr string
	p          *proc
}

// StartVictoriaLogs starts victoria-logs with -retentionPeriod=100y (with
// the default 7d, older test timestamps are silently dropped).
func StartVictoriaLogs(t testing.TB) *VictoriaLogs {
	t.Helper()
	bin, err := Find("victoria-logs", "VICTORIA_LOGS")
	if err != nil {
		Missing(t, "victoria-logs", err)
	}
	dir := t.TempDir()
	port, sport := FreePort(t), FreePort(t)
	v := &VictoriaLogs{Dir: dir, URL: fmt.Sprintf("http://127.0.0.1:%d", port),
		SyslogAddr: fmt.Sprintf("127.0.0.1:%d", sport)}
	v.ESURL = v.URL + "/insert/elasticsearch"
	v.p = &proc{t: t, name: "victoria-logs", log: filepath.Join(dir, "vl.log"),
		args: []string{bin, "-httpListenAddr=127.0.0.1:" + fmt.Sprint(port), "-storageDataPath=" + filepath.Join(dir, "data"),
			"-retentionPeriod=100y", "-syslog.listenAddr.tcp=" + v.SyslogAddr, "-syslog.listenAddr.udp=" + v.SyslogAddr,
			"-loggerLevel=WARN"},
		ready: func() error {
			resp, err := http.Get(v.URL + "/health")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("health: %s", resp.Status)
			}
			return nil
		}}
	v.p.start()
	t.Cleanup(v.p.stop)
	return v
}

// Stop stops victoria-logs (data stays in Dir).
func (v *VictoriaLogs) Stop() { v.p.stop() }

// Start starts it again on the same ports and data.
func (v *VictoriaLogs) Start() { v.p.start() }

// Query runs a LogsQL query and returns the rows.
func (v *VictoriaLogs) Query(t testing.TB, q string) []map[string]string {
	t.Helper()
	resp, err := http.PostForm(v.URL+"/select/logsql/query", url.Values{"query": {q}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := readAll(resp)
		t.Fatalf("logsql %q: %s: %s", q, resp.Status, b)
	}
	var rows []map[string]string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		m := map[string]string{}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("logsql row %q: %v", sc.Bytes(), err)
		}
		rows = append(rows, m)
	}
	return rows
}

// Flush makes recently ingested rows visible to queries.
func (v *VictoriaLogs) Flush(t testing.TB) {
	t.Helper()
	resp, err := http.Get(v.URL + "/internal/force_flush")
	if err == nil {
		resp.Body.Close()
	}
}

func readAll(resp *http.Response) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(resp.Body)
	return b.Bytes(), err
}

// PeakRSS is this process's peak resident set size in bytes (VmHWM), for
// benchmarks.
func PeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

// RsyslogRelay is rsyslogd forwarding everything it receives as a
// XenServer/XCP-ng host forwards its logs after xe host-syslog-reconfigure
// ("*.* @<destination>": UDP, rsyslog's traditional forward format; "@@":
// TCP). Messages go in on UDP (or TCP) at InAddr, as local programs'
// syslog(3) calls would reach it.
type RsyslogRelay struct {
	Dir    string
	InAddr string
	p      *proc
}

// StartRsyslogRelay starts a relay forwarding to dest (host:port) over UDP,
// or TCP when tcp is set; it stops when the test ends.
func StartRsyslogRelay(t testing.TB, dest string, tcp bool) *RsyslogRelay {
	t.Helper()
	bin, err := Find("rsyslogd", "RSYSLOGD")
	if err != nil {
		Missing(t, "rsyslogd", err)
	}
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "rs"), 0o755)
	port := FreePort(t)
	r := &RsyslogRelay{Dir: dir, InAddr: fmt.Sprintf("127.0.0.1:%d", port)}
	at := "@"
	if tcp {
		at = "@@"
	}
	// The host's rsyslog.d/xenserver.conf sets $RepeatedMsgReduction on.
	conf := fmt.Sprintf(`global(workDirectory="%[1]s/rs" maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off")
$RepeatedMsgReduction on
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="%[2]d")
input(type="imtcp" address="127.0.0.1" port="%[2]d")
*.* %[3]s%[4]s
`, dir, port, at, dest)
	confPath := filepath.Join(dir, "rsyslog.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	if out, err := exec.Command(bin, "-N1", "-f", confPath).CombinedOutput(); err != nil {
		t.Fatalf("rsyslog config check: %v\n%s", err, out)
	}
	r.p = &proc{t: t, name: "rsyslogd (relay)", log: filepath.Join(dir, "rsyslogd.log"),
		args:  []string{bin, "-n", "-f", confPath, "-i", filepath.Join(dir, "rs", "rsyslogd.pid")},
		ready: dialReady("tcp", r.InAddr)}
	r.p.start()
	t.Cleanup(r.p.stop)
	return r
}
