package xapisim

import (
	"context"
	"fmt"
	"testing"
)

func TestSmoke(t *testing.T) {
	sc, _ := Builtin("threat-model")
	s := startServer(t, Config{Scenario: sc})
	url := s.URL()
	sess := login(t, url)
	v := call(t, url, "event.from", sess, []any{"*"}, "", 1.0)
	evs, tok := batchEvents(v)
	fmt.Println(len(evs), tok)
	done := make(chan error)
	go func() { done <- s.Play(context.Background(), sc, 0) }()
	for {
		v := call(t, url, "event.from", sess, []any{"vm", "task"}, tok, 2.0)
		var evs []ev
		evs, tok = batchEvents(v)
		for _, e := range evs {
			name := ""
			if e.snap != nil {
				name, _ = e.snap["name_label"].(string)
				fmt.Println(e.class, e.op, name, e.snap["current_operations"], e.snap["status"], e.snap["power_state"])
			} else {
				fmt.Println(e.class, e.op, e.ref)
			}
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
	}
}
