package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats/cef"
	"github.com/vmlineage/vmlineage/formats/ecs"
)

func newRecordsCmd() *cobra.Command {
	var sf storeFlags
	var vm, activity, since, until, format, pool string
	var limit int
	c := &cobra.Command{
		Use:   "records",
		Short: "Print stored lifecycle records",
		Long: `Print the lifecycle records in the store, oldest first.
--format table (default) is for people; json prints one record per line (the record schema).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := cmdContext(c)
			st, err := sf.open()
			if err != nil {
				return err
			}
			defer st.Close()
			f := lineage.Filter{PoolUUID: pool, Limit: limit}
			if vm != "" {
				v, err := resolveVM(ctx, st, vm)
				if err != nil {
					return err
				}
				f.VMUUID = v.UUID
			}
			if activity != "" {
				if f.Activity, err = record.ParseActivity(activity); err != nil {
					return fmt.Errorf("--activity: %w", err)
				}
			}
			if f.Since, f.Until, err = parseTimeRange(since, until); err != nil {
				return err
			}
			recs, err := st.Records(ctx, f)
			if err != nil {
				return err
			}
			if format == "ecs" || format == "cef" {
				return printEncoded(ctx, c.OutOrStdout(), st, recs, format)
			}
			return printRecords(c.OutOrStdout(), st, recs, format)
		},
	}
	sf.bind(c)
	c.Flags().StringVar(&vm, "vm", "", "only records of this VM (uuid or name), as subject or parent")
	c.Flags().StringVar(&activity, "activity", "", "only this activity (clone, start, destroy, …)")
	c.Flags().StringVar(&since, "since", "", "only records that started at or after this time")
	c.Flags().StringVar(&until, "until", "", "only records that started before this time")
	c.Flags().StringVar(&pool, "pool", "", "only records of this pool uuid")
	c.Flags().IntVar(&limit, "limit", 0, "print at most this many records")
	c.Flags().StringVar(&format, "format", "table", "table, json (one record per line), ecs (one ECS document per line) or cef (one CEF line per record)")
	return c
}

func printRecords(w io.Writer, st *lineage.Store, recs []record.Record, format string) error {
	switch format {
	case "json":
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		for i := range recs {
			if err := enc.Encode(&recs[i]); err != nil {
				return err
			}
		}
		return bw.Flush()
	case "table":
		names := vmNames(st)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "START\tEND\tACTIVITY\tRESULT\tVM\tPARENT\tHOST\tSOURCE\tACTOR")
		for _, r := range recs {
			act := string(r.Activity)
			if r.Activity == record.Other {
				act = "other(" + r.Operation + ")"
			}
			res := string(r.Result)
			if r.Error != "" {
				res += " (" + r.Error + ")"
			}
			host := r.HostName
			if r.DestinationHostUUID != "" {
				host += " -> " + names.host(r.DestinationHostUUID)
			}
			actor := "-"
			if a := r.Actor; a != nil && a.Name != "" {
				actor = a.Name
				if a.ClientIP != "" {
					actor += "@" + a.ClientIP
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", record.FormatTime(r.Start), record.FormatTime(r.End), act, res,
				names.vm(r.VMUUID, r.VMName), names.vm(r.ParentVMUUID, ""), host, r.Source, actor)
		}
		return tw.Flush()
	}
	return fmt.Errorf("--format: %q is not table, json, ecs or cef", format)
}

// printEncoded writes each record as the outputs would ship it.
func printEncoded(ctx context.Context, w io.Writer, st *lineage.Store, recs []record.Record, format string) error {
	bw := bufio.NewWriter(w)
	cs := pipeline.NewContexts(st, version)
	var buf []byte
	for i := range recs {
		c := cs.For(ctx, &recs[i], "")
		if format == "ecs" {
			buf = ecs.AppendRecord(buf[:0], &recs[i], c)
		} else {
			buf = cef.AppendRecord(buf[:0], &recs[i], c)
		}
		buf = append(buf, '\n')
		if _, err := bw.Write(buf); err != nil {
			return err
		}
	}
	return bw.Flush()
}

type nameBook struct{ vms, hosts map[string]string }

func vmNames(st *lineage.Store) nameBook {
	nb := nameBook{vms: map[string]string{}, hosts: map[string]string{}}
	ctx := context.Background()
	if vms, err := st.VMs(ctx, ""); err == nil {
		for _, v := range vms {
			nb.vms[v.UUID] = v.Name
		}
	}
	if hs, err := st.Hosts(ctx); err == nil {
		for _, h := range hs {
			nb.hosts[h.UUID] = h.Name
		}
	}
	return nb
}

func (n nameBook) vm(uuid, name string) string {
	if uuid == "" {
		return "-"
	}
	if name == "" {
		name = n.vms[uuid]
	}
	return name + " (" + short(uuid) + ")"
}

func (n nameBook) host(uuid string) string {
	if h := n.hosts[uuid]; h != "" {
		return h
	}
	return short(uuid)
}

func short(uuid string) string {
	if len(uuid) > 8 {
		return uuid[:8]
	}
	return uuid
}

// resolveVM finds a VM by uuid, or by name when exactly one VM has it.
func resolveVM(ctx context.Context, st *lineage.Store, s string) (lineage.VM, error) {
	if v, err := st.VM(ctx, s); err == nil {
		return v, nil
	}
	vms, err := st.VMs(ctx, "")
	if err != nil {
		return lineage.VM{}, err
	}
	var found []lineage.VM
	for _, v := range vms {
		if v.Name == s || strings.HasPrefix(v.UUID, s) {
			found = append(found, v)
		}
	}
	if len(found) == 0 {
		// Not in the tree under that name: a VM known only from records
		// (vmlineage replay stores no tree) or by a former name.
		known, err := st.VMsKnownAs(ctx, s)
		if err != nil {
			return lineage.VM{}, err
		}
		for _, k := range known {
			if v, err := st.VM(ctx, k.UUID); err == nil {
				k = v
			}
			found = append(found, k)
		}
	}
	switch len(found) {
	case 0:
		return lineage.VM{}, fmt.Errorf("no VM named %q or with that uuid in the store", s)
	case 1:
		return found[0], nil
	}
	var ids []string
	for _, v := range found {
		ids = append(ids, v.UUID)
	}
	return lineage.VM{}, fmt.Errorf("%d VMs match %q; give a uuid: %s", len(found), s, strings.Join(ids, ", "))
}
