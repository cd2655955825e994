// Command testdetector is a detector that misbehaves on purpose, for the
// manager's tests. Its behaviour is fixed at build time:
//
//	go build -ldflags "-X main.mode=hang" ./plugins/internal/testdetector
//
// Modes: ok (one suspect: each alerted VM's first sibling, score 0.5), hang
// (Enrich never returns), crash (Enrich exits the process), slow (Enrich
// takes 2 s, for kill-mid-call tests), garbage (prints junk instead of the
// go-plugin handshake), badanswer (a suspect with a NaN score), configfail
// (Configure fails), picky (declares Needs: enrich only, ancestors only,
// when an ancestor was destroyed; its note says what the host sent), echo
// (Enrich waits the alert's ID read as milliseconds, capped at 50, and
// notes the ID: calls in flight together are answered out of order; for
// the ID "invalid-utf8" its note is not UTF-8, which protobuf refuses to
// encode), slowstart (as ok, but takes 2 s to start), hangenrich (Enrich
// never returns, OnRecord answers). With
// VMLINEAGE_TESTDETECTOR_PIDDIR set it writes its pid to <dir>/<mode>.pid
// at start.
package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

var mode = "ok"

func main() {
	if dir := os.Getenv("VMLINEAGE_TESTDETECTOR_PIDDIR"); dir != "" {
		os.WriteFile(filepath.Join(dir, mode+".pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	if mode == "slowstart" {
		time.Sleep(2 * time.Second)
	}
	if mode == "garbage" {
		fmt.Println("this is not a go-plugin handshake \x00\xff|||")
		os.Exit(0)
	}
	if mode == "picky" {
		plugins.Serve(&picky{})
		return
	}
	plugins.Serve(&det{})
}

// picky declares what it needs.
type picky struct{ det }

func (p *picky) Needs() plugins.Needs {
	return plugins.Needs{Enrich: true, AlertAncestors: true, EnrichWhen: &plugins.EnrichWhen{DestroyedAncestor: true}}
}

func (p *picky) Enrich(ctx context.Context, a *plugins.Alert) (*plugins.Enrichment, error) {
	return &plugins.Enrichment{Notes: []string{fmt.Sprintf("family=%d ancestors=%d records=%d window=%s", len(a.Family), len(a.Ancestors), len(a.Records), a.ContextWindow)}}, nil
}

type det struct{ lin plugins.Lineage }

func (d *det) Info() plugins.Info { return plugins.Info{Name: "test-" + mode, Version: "0"} }

func (d *det) Configure(_ context.Context, _ map[string]string, lin plugins.Lineage) error {
	if mode == "configfail" {
		return fmt.Errorf("refusing to configure")
	}
	d.lin = lin
	return nil
}

func (d *det) OnRecord(ctx context.Context, r *record.Record) ([]plugins.Finding, error) {
	if err := d.misbehave(ctx); err != nil {
		return nil, err
	}
	return []plugins.Finding{{Kind: "test", VMUUID: r.VMUUID, Severity: 1, Summary: "saw " + string(r.Activity), Time: r.Start}}, nil
}

func (d *det) Enrich(ctx context.Context, a *plugins.Alert) (*plugins.Enrichment, error) {
	if mode == "hangenrich" {
		select {} // a deadlock on the enrich path alone
	}
	if err := d.misbehave(ctx); err != nil {
		return nil, err
	}
	if mode == "echo" {
		if a.ID == "invalid-utf8" {
			return &plugins.Enrichment{Notes: []string{"\xff"}}, nil
		}
		ms, _ := strconv.Atoi(a.ID)
		select {
		case <-time.After(time.Duration(min(ms, 50)) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &plugins.Enrichment{Notes: []string{"id " + a.ID}}, nil
	}
	out := &plugins.Enrichment{}
	for _, v := range a.VMs {
		sibs, err := d.lin.Siblings(ctx, v.UUID)
		if err != nil {
			return nil, err
		}
		if len(sibs) > 0 {
			score := 0.5
			if mode == "badanswer" {
				score = math.NaN()
			}
			out.Suspects = append(out.Suspects, plugins.Suspect{VMUUID: sibs[0].UUID, VMName: sibs[0].Name, Score: score, Reason: "test: first sibling"})
		}
	}
	return out, nil
}

func (d *det) misbehave(ctx context.Context) error {
	switch mode {
	case "hang":
		select {} // ignores ctx on purpose: a truly hung detector
	case "crash":
		os.Exit(3)
	case "slow":
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
