// Command example is the smallest useful vmlineage detector: on an alert it
// names the alerted VM's siblings (the other VMs made from the same parent)
// as low-ranked suspects. Copy this folder to start your own; README.md
// explains the protocol.
package main

import (
	"context"
	"fmt"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

func main() { plugins.Serve(&Siblings{}) }

// Siblings implements plugins.Detector.
type Siblings struct{ lin plugins.Lineage }

// Info says who we are (shown in `vmlineage enrich` notes and logs).
func (s *Siblings) Info() plugins.Info {
	return plugins.Info{Name: "example", Version: "1.0.0", Description: "siblings of an alerted VM"}
}

// Configure keeps the lineage service; settings are unused here.
func (s *Siblings) Configure(_ context.Context, _ map[string]string, lin plugins.Lineage) error {
	s.lin = lin
	return nil
}

// Needs is optional (plugins.NeedsDeclarer): it tells the host what to
// send and when to call. Here: alerts only, with the alerted VM's family.
// Without it the host sends everything and calls on every alert and record.
func (s *Siblings) Needs() plugins.Needs {
	return plugins.Needs{Enrich: true, AlertFamily: true}
}

// OnRecord sees every lifecycle record; this detector has nothing to say.
func (s *Siblings) OnRecord(context.Context, *record.Record) ([]plugins.Finding, error) {
	return nil, nil
}

// Enrich lists the siblings of each alerted VM.
func (s *Siblings) Enrich(ctx context.Context, a *plugins.Alert) (*plugins.Enrichment, error) {
	out := &plugins.Enrichment{}
	ix := a.Index() // the host usually sends the family along
	for _, av := range a.VMs {
		var sibs []plugins.VM
		if me := ix.VMs[av.UUID]; me != nil {
			for _, v := range a.Family {
				if me.ParentUUID != "" && v.ParentUUID == me.ParentUUID && v.UUID != me.UUID {
					sibs = append(sibs, v)
				}
			}
		} else {
			var err error
			if sibs, err = s.lin.Siblings(ctx, av.UUID); err != nil {
				return nil, err
			}
		}
		for _, v := range sibs {
			out.Suspects = append(out.Suspects, plugins.Suspect{VMUUID: v.UUID, VMName: v.Name, Score: 0.1,
				PowerState: v.PowerState, Destroyed: v.IsDestroyed(),
				Reason: fmt.Sprintf("%s shares a parent with the alerted VM", v.Name)})
		}
	}
	return out, nil
}
