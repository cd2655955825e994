package ecs

import (
	"strconv"

	"github.com/vmlineage/vmlineage/formats"
)

// AppendCheckpoint appends the ECS document of a chain checkpoint: an
// event.kind "state" document in the same data stream as the records, with
// the head under vmlineage.checkpoint (see README.md).
func AppendCheckpoint(dst []byte, cp *formats.Checkpoint, c *formats.Context) []byte {
	if c == nil {
		c = &formats.Context{}
	}
	var top object
	b := append(dst, '{')
	b = top.key(b, `"@timestamp":`)
	b = appendTime(b, cp.At)
	b = top.key(b, `"ecs":`)
	b = append(b, `{"version":"`+Version+`"}`...)
	b = top.key(b, `"message":`)
	b = appendString(b, "vmlineage chain checkpoint: "+strconv.FormatInt(cp.Seq, 10)+" records sealed, head "+cp.Hash)
	b = top.key(b, `"event":`)
	var ev object
	b = append(b, '{')
	b = ev.raw(b, `"kind":`, "state")
	b = ev.key(b, `"category":`)
	b = append(b, `["configuration"]`...)
	b = ev.key(b, `"type":`)
	b = append(b, `["info"]`...)
	b = ev.raw(b, `"action":`, formats.CheckpointSignatureID)
	b = ev.str(b, `"id":`, formats.CheckpointID(cp))
	b = ev.raw(b, `"dataset":`, formats.Dataset)
	b = ev.raw(b, `"module":`, "vmlineage")
	b = ev.raw(b, `"provider":`, "vmlineage")
	b = ev.str(b, `"reason":`, cp.Reason)
	b = append(b, '}')
	if cp.PoolUUID != "" || c.PoolName != "" {
		b = top.key(b, `"orchestrator":`)
		var o object
		b = append(b, '{')
		b = o.raw(b, `"type":`, "xapi")
		b = o.key(b, `"cluster":`)
		var cl object
		b = append(b, '{')
		b = cl.str(b, `"id":`, cp.PoolUUID)
		b = cl.str(b, `"name":`, c.PoolName)
		b = append(b, '}', '}')
	}
	if c.AgentName != "" || c.AgentID != "" || c.AgentVersion != "" {
		b = top.key(b, `"agent":`)
		var a object
		b = append(b, '{')
		b = a.raw(b, `"type":`, "vmlineage")
		b = a.str(b, `"name":`, c.AgentName)
		b = a.str(b, `"id":`, c.AgentID)
		b = a.str(b, `"version":`, c.AgentVersion)
		b = append(b, '}')
	}
	b = top.key(b, `"vmlineage":`)
	b = append(b, `{"checkpoint":{"seq":`...)
	b = appendInt(b, cp.Seq)
	b = append(b, `,"hash":`...)
	b = appendString(b, cp.Hash)
	b = append(b, `}}`...)
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
