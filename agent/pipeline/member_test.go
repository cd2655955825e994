package pipeline_test

import (
	"net"
	"net/http"
	"sync/atomic"

	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

// member is a pool member: every XML-RPC call is refused with
// HOST_IS_SLAVE [master address].
type member struct {
	srv   *http.Server
	calls atomic.Int64
}

func listenMember(addr, master string) (*member, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := &member{}
	m.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.calls.Add(1)
		w.Header().Set("Content-Type", "text/xml")
		w.Write(xapisim.XMLFailure("HOST_IS_SLAVE", master))
	})}
	go m.srv.Serve(ln)
	return m, nil
}

func (m *member) Close() error { return m.srv.Close() }
