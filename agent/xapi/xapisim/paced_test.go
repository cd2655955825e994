package xapisim

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/xapi"
)

func describeBatch(b *xapi.EventBatch) string {
	var sb strings.Builder
	for _, e := range b.Events {
		fmt.Fprintf(&sb, "%s %s %s %s|", e.ID, e.Class, e.Operation, e.Ref)
	}
	return sb.String() + " token " + b.Token
}

// TestPlayPacedAnswersAsCapture: a client of a paced play gets, answer for
// answer, what Capture records for the same poll interval, however slowly
// it asks.
func TestPlayPacedAnswersAsCapture(t *testing.T) {
	sc := Generate(GenConfig{Hosts: 3, VMs: 40, Ops: 120, Seed: 7, Spacing: 50 * time.Millisecond})
	poll := 300 * time.Millisecond
	var want []string
	if _, err := Capture(sc, xapi.Classes, poll, func(body []byte) error {
		b, err := xapi.DecodeEventFrom(bytes.NewReader(body))
		if err == nil {
			want = append(want, describeBatch(b))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := New(Config{Scenario: sc})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := xapi.New(xapi.Config{URL: srv.URL(), User: "root", Password: "xapisim", AllowHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Login(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := c.EventFrom(ctx, xapi.Classes, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	got = append(got, describeBatch(first))
	played := make(chan error, 1)
	go func() { played <- srv.PlayPaced(ctx, sc, poll) }()
	token := first.Token
	for len(got) < len(want) {
		b, err := c.EventFrom(ctx, xapi.Classes, token, 0.2)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 3 {
			time.Sleep(300 * time.Millisecond) // a slow client changes nothing
		}
		got = append(got, describeBatch(b))
		token = b.Token
	}
	if err := <-played; err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("answer %d of %d:\n got %s\nwant %s", i, len(want), got[i], want[i])
		}
	}
}
