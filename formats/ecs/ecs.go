// Package ecs encodes lifecycle records as Elastic Common Schema (ECS 9.4.0)
// JSON documents, one per record, ready for a logs-vmlineage.lifecycle-*
// data stream. The encoder appends to a caller's buffer and writes JSON by
// hand: no reflection, no allocation when the buffer is large enough.
//
// The field mapping is documented in README.md.
package ecs

import (
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats"
)

// Version is the ECS version the documents follow and are validated against
// (npm @elastic/ecs).
const Version = "9.4.0"

// Provider is event.provider: every record comes from XAPI, whether seen
// through its event stream or its log (xen.source says which).
const Provider = "xapi"

// Marshal returns the ECS document of r as a new slice.
func Marshal(r *record.Record, c *formats.Context) []byte {
	return AppendRecord(make([]byte, 0, 4096), r, c)
}

// object tracks whether a JSON object needs a comma before its next member.
type object struct{ n int }

// key writes the member name k, given quoted with its colon (`"name":`).
func (o *object) key(b []byte, k string) []byte {
	if o.n > 0 {
		b = append(b, ',')
	}
	o.n++
	return append(b, k...)
}

// raw writes "k":"v" for a v of ours that needs no escaping (a constant).
func (o *object) raw(b []byte, k, v string) []byte {
	if v == "" {
		return b
	}
	b = o.key(b, k)
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"')
}

// str writes "k":"v" unless v is empty.
func (o *object) str(b []byte, k, v string) []byte {
	if v == "" {
		return b
	}
	b = o.key(b, k)
	return appendString(b, v)
}

// strs writes "k":[...] with the non-empty values, unless there are none.
func (o *object) strs(b []byte, k string, vs []string) []byte {
	started := false
	for _, v := range vs {
		if v == "" {
			continue
		}
		if !started {
			b = o.key(b, k)
			b = append(b, '[')
			started = true
		} else {
			b = append(b, ',')
		}
		b = appendString(b, v)
	}
	if started {
		b = append(b, ']')
	}
	return b
}

// AppendRecord appends the ECS document of r (one JSON object, no newline) to
// dst and returns the extended buffer. c may be nil.
func AppendRecord(dst []byte, r *record.Record, c *formats.Context) []byte {
	if c == nil {
		c = &formats.Context{}
	}
	sp := formats.SpecOf(r.Activity)
	vmIPs := ipMask(c.VMIPs)
	actorName, actorID, actorAddr, originator := formats.ActorOf(r, c)
	hostIPok, actorIPok := validIP(c.HostIP), validIP(actorAddr)
	b := dst
	var top object
	b = append(b, '{')

	ts := r.End
	if ts.IsZero() {
		ts = r.Start
	}
	b = top.key(b, `"@timestamp":`)
	b = appendTime(b, ts)
	b = top.key(b, `"ecs":`)
	b = append(b, `{"version":"`+Version+`"}`...)

	// message: pieces escaped one by one, so it costs no allocation
	var parts [formats.MaxMessageParts]string
	n := formats.MessageParts(r, c, &parts)
	b = top.key(b, `"message":`)
	b = append(b, '"')
	for _, p := range parts[:n] {
		b = appendStringBody(b, p)
	}
	b = append(b, '"')

	// event
	b = top.key(b, `"event":`)
	var ev object
	b = append(b, '{')
	b = ev.raw(b, `"kind":`, "event")
	category, typ, reason := sp.Category, sp.Type, ""
	switch r.Result {
	case record.Denied:
		// nothing happened to the VM: the API call was refused
		category, typ, reason = "api", "denied", "denied"
	case record.Cancelled:
		reason = "cancelled"
	}
	b = ev.key(b, `"category":["`)
	b = append(b, category...)
	b = append(b, `"],"type":["`...)
	ev.n++
	b = append(b, typ...)
	b = append(b, '"', ']')
	b = ev.raw(b, `"action":`, sp.Action)
	b = ev.raw(b, `"outcome":`, formats.Outcome(r.Result))
	b = ev.raw(b, `"reason":`, reason)
	b = ev.str(b, `"id":`, r.ID)
	b = ev.raw(b, `"dataset":`, formats.Dataset)
	b = ev.raw(b, `"module":`, "vmlineage")
	b = ev.raw(b, `"provider":`, Provider)
	b = ev.key(b, `"severity":`) // the CEF severity, so both formats rank alike
	b = appendInt(b, int64(sp.SeverityOf(r.Result)))
	if !r.Start.IsZero() {
		b = ev.key(b, `"start":`)
		b = appendTime(b, r.Start)
	}
	if !r.End.IsZero() {
		b = ev.key(b, `"end":`)
		b = appendTime(b, r.End)
		if !r.Start.IsZero() && !r.End.Before(r.Start) {
			b = ev.key(b, `"duration":`)
			b = appendInt(b, r.End.Sub(r.Start).Nanoseconds())
		}
	}
	b = append(b, '}')

	// host: the VM is the subject of the event
	vmName := r.VMName
	if vmName == "" {
		vmName = r.VMUUID // dashboards group by host.name
	}
	if vmName != "" || vmIPs != 0 || hasMAC(c.VMMACs) {
		b = top.key(b, `"host":`)
		var h object
		b = append(b, '{')
		b = h.str(b, `"name":`, vmName)
		b = h.str(b, `"id":`, r.VMUUID)
		b = h.str(b, `"type":`, string(c.VMKind))
		b = ipArray(b, &h, `"ip":`, c.VMIPs, vmIPs, "", false, "", false)
		b = macArray(b, &h, `"mac":`, c.VMMACs)
		b = append(b, '}')
	}
	if r.VMUUID != "" || r.VMName != "" {
		b = top.key(b, `"cloud":`)
		b = append(b, `{"provider":"xen","instance":{`...)
		var ci object
		b = ci.str(b, `"id":`, r.VMUUID)
		b = ci.str(b, `"name":`, r.VMName)
		b = append(b, '}', '}')
	}

	// observer: the XAPI host that ran the task
	hostName := formats.HostName(r, c)
	b = top.key(b, `"observer":`)
	b = append(b, `{"type":"hypervisor","vendor":"Xen","product":"XAPI"`...)
	ob := object{n: 1}
	b = ob.str(b, `"hostname":`, hostName)
	b = ipArray(b, &ob, `"ip":`, nil, 0, c.HostIP, hostIPok, "", false)
	b = append(b, '}')

	// orchestrator: the pool is the cluster, the VM the resource
	b = top.key(b, `"orchestrator":`)
	b = append(b, `{"type":"xapi"`...)
	or := object{n: 1}
	if r.PoolUUID != "" || c.PoolName != "" {
		b = or.key(b, `"cluster":`)
		var cl object
		b = append(b, '{')
		b = cl.str(b, `"id":`, r.PoolUUID)
		b = cl.str(b, `"name":`, c.PoolName)
		b = append(b, '}')
	}
	b = or.key(b, `"resource":`)
	b = append(b, `{"type":"vm"`...)
	res := object{n: 1}
	b = res.str(b, `"id":`, r.VMUUID)
	b = res.str(b, `"name":`, r.VMName)
	if r.ParentVMUUID != "" {
		b = res.key(b, `"parent":`)
		b = append(b, `{"type":"vm"}`...)
	}
	b = append(b, '}', '}')

	// user / source: who did it (issue 6)
	if actorName != "" || actorID != "" {
		b = top.key(b, `"user":`)
		var u object
		b = append(b, '{')
		b = u.str(b, `"name":`, actorName)
		b = u.str(b, `"id":`, actorID)
		b = append(b, '}')
	}
	if originator != "" {
		b = top.key(b, `"user_agent":`)
		b = append(b, `{"name":`...)
		b = appendString(b, originator)
		b = append(b, '}')
	}
	if actorIPok {
		b = top.key(b, `"source":`)
		b = append(b, `{"ip":`...)
		b = appendString(b, actorAddr)
		b = append(b, '}')
	}

	// related: every host name and address the event names
	hosts := [...]string{vmName, hostName, c.DestinationHostName, c.ParentName}
	if hosts[0] != "" || hosts[1] != "" || hosts[2] != "" || hosts[3] != "" ||
		vmIPs != 0 || hostIPok || actorIPok || actorName != "" {
		b = top.key(b, `"related":`)
		var rel object
		b = append(b, '{')
		nh := 0
		for i, h := range hosts {
			if h == "" || contains(hosts[:i], h) {
				continue
			}
			if nh == 0 {
				b = rel.key(b, `"hosts":`)
				b = append(b, '[')
			} else {
				b = append(b, ',')
			}
			nh++
			b = appendString(b, h)
		}
		if nh > 0 {
			b = append(b, ']')
		}
		b = ipArray(b, &rel, `"ip":`, c.VMIPs, vmIPs, c.HostIP, hostIPok, actorAddr, actorIPok)
		if actorName != "" {
			b = rel.key(b, `"user":`)
			b = append(b, '[')
			b = appendString(b, actorName)
			b = append(b, ']')
		}
		b = append(b, '}')
	}

	// error
	if r.Error != "" {
		b = top.key(b, `"error":`)
		var e object
		b = append(b, '{')
		b = e.str(b, `"message":`, r.Error)
		b = e.str(b, `"code":`, formats.ErrorCode(r.Error))
		b = append(b, '}')
	}

	// agent: this shipper
	b = top.key(b, `"agent":`)
	b = append(b, `{"type":"vmlineage"`...)
	ag := object{n: 1}
	b = ag.str(b, `"name":`, c.AgentName)
	b = ag.str(b, `"id":`, c.AgentID)
	b = ag.str(b, `"version":`, c.AgentVersion)
	b = append(b, '}')

	// xen: facts of the Xen world with no ECS home
	b = top.key(b, `"xen":`)
	var x object
	b = append(b, '{')
	b = x.str(b, `"source":`, string(r.Source))
	b = x.str(b, `"operation":`, r.Operation)
	b = x.str(b, `"result":`, string(r.Result))
	if r.TaskUUID != "" || r.TaskID != "" {
		b = x.key(b, `"task":`)
		var t object
		b = append(b, '{')
		b = t.str(b, `"uuid":`, r.TaskUUID)
		b = t.str(b, `"id":`, r.TaskID)
		b = append(b, '}')
	}
	if r.PoolUUID != "" || c.PoolName != "" {
		b = x.key(b, `"pool":`)
		var p object
		b = append(b, '{')
		b = p.str(b, `"uuid":`, r.PoolUUID)
		b = p.str(b, `"name":`, c.PoolName)
		b = append(b, '}')
	}
	if r.HostUUID != "" {
		b = x.key(b, `"host":`)
		b = append(b, `{"uuid":`...)
		b = appendString(b, r.HostUUID)
		b = append(b, '}')
	}
	b = pair(b, &x, `"destination_host":`, r.DestinationHostUUID, c.DestinationHostName)
	if c.PowerState != "" || r.SnapshotUUID != "" {
		b = x.key(b, `"vm":`)
		var v object
		b = append(b, '{')
		b = v.str(b, `"power_state":`, c.PowerState)
		b = v.str(b, `"snapshot_uuid":`, r.SnapshotUUID)
		b = append(b, '}')
	}
	b = x.strs(b, `"unknown":`, r.Unknown)
	b = append(b, '}')

	// vmlineage: the family tree
	b = top.key(b, `"vmlineage":`)
	var l object
	b = append(b, '{')
	b = l.str(b, `"activity":`, string(r.Activity))
	b = l.str(b, `"kind":`, string(c.VMKind))
	b = pair(b, &l, `"parent":`, r.ParentVMUUID, c.ParentName)
	b = l.strs(b, `"ancestor_path":`, c.AncestorPath)
	if len(c.AncestorPath) > 0 {
		b = l.key(b, `"depth":`)
		b = appendInt(b, int64(len(c.AncestorPath)))
	}
	b = l.str(b, `"family_root":`, c.FamilyRoot)
	if seq, prev, hash := formats.ChainOf(r, c); prev != "" || hash != "" {
		b = l.key(b, `"chain":`)
		var ch object
		b = append(b, '{')
		if seq > 0 {
			b = ch.key(b, `"seq":`)
			b = appendInt(b, seq)
		}
		b = ch.str(b, `"prev":`, prev)
		b = ch.str(b, `"hash":`, hash)
		b = append(b, '}')
	}
	b = append(b, '}')

	// data_stream must match the index the output writes to
	ns := c.Namespace
	if ns == "" {
		ns = formats.DefaultNamespace
	}
	b = top.key(b, `"data_stream":`)
	b = append(b, `{"type":"logs","dataset":"`+formats.Dataset+`","namespace":`...)
	b = appendString(b, ns)
	b = append(b, '}')

	return append(b, '}')
}

// pair writes "k":{"uuid":..,"name":..} when either is set.
func pair(b []byte, o *object, k, uuid, name string) []byte {
	if uuid == "" && name == "" {
		return b
	}
	b = o.key(b, k)
	var p object
	b = append(b, '{')
	b = p.str(b, `"uuid":`, uuid)
	b = p.str(b, `"name":`, name)
	return append(b, '}')
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}
