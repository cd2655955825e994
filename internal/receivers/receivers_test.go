package receivers

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// The helpers themselves must work: a hand-made octet-counted frame arrives.
func TestRsyslogAndSyslogNGReceive(t *testing.T) {
	r := StartRsyslog(t)
	s := StartSyslogNG(t)
	msg := fmt.Sprintf("<134>1 %s h app 1 mid [vmlineage@32473 id=\"x1\"] CEF:0|a|b|1|c|d|3|msg=hi", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
	for _, addr := range []string{r.TCPAddr, s.TCPAddr} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "%d %s", len(msg), msg)
		c.Close()
	}
	m := r.WaitMessages(t, 1, 5*time.Second)
	if len(m) != 1 || m[0].App != "app" || m[0].MsgID != "mid" || !strings.HasPrefix(m[0].Msg, "CEF:0|") {
		t.Fatalf("rsyslog got %+v", m)
	}
	n := s.WaitMessages(t, 1, 5*time.Second)
	if len(n) != 1 || n[0].Program != "app" || n[0].SDID != "x1" || !strings.HasPrefix(n[0].Msg, "CEF:0|") {
		t.Fatalf("syslog-ng got %+v", n)
	}
}

func TestVictoriaLogsUp(t *testing.T) {
	v := StartVictoriaLogs(t)
	if rows := v.Query(t, "*"); len(rows) != 0 {
		t.Fatalf("fresh VictoriaLogs holds %d rows", len(rows))
	}
}
