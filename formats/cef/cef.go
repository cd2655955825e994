// Package cef encodes lifecycle records as ArcSight Common Event Format
// (CEF:0) lines and parses CEF lines (alerts from other sensors, issue 4).
//
// A line is
//
//	CEF:0|vmlineage|vmlineage|<agent version>|vm.<activity>|VM <activity> <result>|<severity>|<extension>
//
// with no byte-order mark and no syslog header (outputs add that). The vendor
// and product strings are a contract with SIEM parsers; the extension keys
// and custom-field labels are listed in README.md. The encoder appends to a
// caller's buffer and allocates nothing when the buffer is large enough.
package cef

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats"
)

// Header lengths of the CEF standard, in characters.
const (
	maxVendor    = 63
	maxVersion   = 31
	maxSignature = 1023
	maxName      = 512
)

// Extension lengths from the CEF extension dictionary, in characters.
const (
	maxAct        = 63
	maxOutcome    = 63
	maxReason     = 1023
	maxCat        = 1023
	maxDvchost    = 100
	maxDeviceExt  = 255
	maxExternalID = 40
	maxDhost      = 1023
	maxUser       = 1023
	maxProcess    = 1023
	maxFacility   = 1023
	maxMsg        = 1023
	maxCS         = 4000
	maxFlex       = 1023 // flexString1/2 (ArcSight: 1023)
)

// Custom-field labels: a contract, like the vendor and product.
const (
	LabelVMUUID         = "vmUuid"
	LabelParentVMUUID   = "parentVmUuid"
	LabelPoolUUID       = "poolUuid"
	LabelTaskUUID       = "taskUuid"
	LabelFamilyRoot     = "familyRoot"
	LabelDestHostUUID   = "destinationHostUuid"
	LabelSnapshotUUID   = "snapshotUuid"
	LabelDurationMillis = "durationMs"
	LabelLineageDepth   = "lineageDepth"
	LabelChainSeq       = "chainSeq"
	LabelChainHash      = "chainHash"
	LabelChainPrev      = "chainPrev"
)

// Marshal returns the CEF line of r as a new slice.
func Marshal(r *record.Record, c *formats.Context) []byte {
	return AppendRecord(make([]byte, 0, 1536), r, c)
}

// AppendRecord appends the CEF line of r (no newline) to dst and returns the
// extended buffer. c may be nil.
func AppendRecord(dst []byte, r *record.Record, c *formats.Context) []byte {
	if c == nil {
		c = &formats.Context{}
	}
	sp := formats.SpecOf(r.Activity)
	b := append(dst, "CEF:0|"+formats.Vendor+"|"+formats.Product+"|"...)
	ver := c.AgentVersion
	if ver == "" {
		ver = "unknown"
	}
	b = appendHeader(b, ver, maxVersion)
	b = append(b, '|')
	b = append(b, sp.SignatureID...)
	b = append(b, "|VM "...)
	b = append(b, sp.Noun...)
	b = append(b, ' ')
	b = append(b, formats.ResultWord(r.Result)...)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(sp.SeverityOf(r.Result)), 10)
	b = append(b, '|')
	// Extension. The first key follows the last '|' directly, as the
	// standard's examples do.

	ts := r.End
	if ts.IsZero() {
		ts = r.Start
	}
	b = appendMillis(b, "rt=", ts)
	b = appendMillis(b, " start=", r.Start)
	b = appendMillis(b, " end=", r.End)
	act := string(r.Activity)
	if act == "" {
		act = string(record.Other)
	}
	b = appendExt(b, " act=", act, maxAct)
	b = append(b, " outcome="...)
	b = append(b, formats.Outcome(r.Result)...)
	switch {
	case r.Error != "":
		b = appendExt(b, " reason=", r.Error, maxReason)
	case r.Result == record.Denied || r.Result == record.Cancelled:
		b = appendExt(b, " reason=", string(r.Result), maxReason)
	}
	b = append(b, " cat=/vmlineage/lifecycle/"...)
	b = append(b, sp.Action[3:]...) // "vm-clone" -> "clone"
	host := formats.HostName(r, c)
	b = appendExt(b, " dvchost=", host, maxDvchost)
	b = appendIPv4(b, " dvc=", c.HostIP)
	dev := r.HostUUID
	if dev == "" {
		dev = r.PoolUUID
	}
	b = appendExt(b, " deviceExternalId=", dev, maxDeviceExt)
	b = appendExt(b, " externalId=", r.ID, maxExternalID)
	b = append(b, " deviceProcessName=xapi"...)
	b = appendExt(b, " deviceFacility=", string(r.Source), maxFacility)
	vm := r.VMName
	if vm == "" {
		vm = r.VMUUID
	}
	b = appendExt(b, " dhost=", vm, maxDhost)
	for _, ip := range c.VMIPs { // the first IPv4 address
		n := len(b)
		if b = appendIPv4(b, " dst=", ip); len(b) > n {
			break
		}
	}
	for _, m := range c.VMMACs {
		var mac [17]byte
		if normMAC(&mac, m) {
			b = append(b, " dmac="...)
			b = append(b, mac[:]...)
			break
		}
	}
	actorName, actorID, actorAddr, originator := formats.ActorOf(r, c)
	b = appendExt(b, " suser=", actorName, maxUser)
	b = appendExt(b, " suid=", actorID, maxUser)
	b = appendIPv4(b, " src=", actorAddr)
	b = appendExt(b, " requestClientApplication=", originator, maxUser)

	// msg: the human sentence, written piece by piece within one budget
	var parts [formats.MaxMessageParts]string
	n := formats.MessageParts(r, c, &parts)
	mark := len(b)
	b = append(b, " msg="...)
	start := len(b)
	v := newValue(b, maxMsg, false)
	for _, p := range parts[:n] {
		b = v.write(b, p)
	}
	if b2, ok := v.finish(b, start); ok {
		b = b2
	} else {
		b = b[:mark]
	}

	b = appendCS(b, 1, LabelVMUUID, r.VMUUID)
	b = appendCS(b, 2, LabelParentVMUUID, r.ParentVMUUID)
	b = appendCS(b, 3, LabelPoolUUID, r.PoolUUID)
	b = appendCS(b, 4, LabelTaskUUID, r.TaskUUID)
	b = appendCS(b, 5, LabelFamilyRoot, c.FamilyRoot)
	switch {
	case r.DestinationHostUUID != "":
		b = appendCS(b, 6, LabelDestHostUUID, r.DestinationHostUUID)
	case r.SnapshotUUID != "":
		b = appendCS(b, 6, LabelSnapshotUUID, r.SnapshotUUID)
	}
	if !r.Start.IsZero() && !r.End.IsZero() && !r.End.Before(r.Start) {
		b = append(b, " cn1Label="+LabelDurationMillis+" cn1="...)
		b = strconv.AppendInt(b, r.End.Sub(r.Start).Milliseconds(), 10)
	}
	if len(c.AncestorPath) > 0 {
		b = append(b, " cn2Label="+LabelLineageDepth+" cn2="...)
		b = strconv.AppendInt(b, int64(len(c.AncestorPath)), 10)
	}
	if seq, prev, hash := formats.ChainOf(r, c); hash != "" {
		if seq > 0 {
			b = append(b, " cn3Label="+LabelChainSeq+" cn3="...)
			b = strconv.AppendInt(b, seq, 10)
		}
		b = appendExt(b, " flexString1Label="+LabelChainHash+" flexString1=", hash, maxFlex)
		b = appendExt(b, " flexString2Label="+LabelChainPrev+" flexString2=", prev, maxFlex)
	}
	return b
}

var csKeys = [...][2]string{
	{" cs1Label=", " cs1="}, {" cs2Label=", " cs2="}, {" cs3Label=", " cs3="},
	{" cs4Label=", " cs4="}, {" cs5Label=", " cs5="}, {" cs6Label=", " cs6="},
}

// appendCS writes a labelled custom string; the label travels with the value.
func appendCS(b []byte, i int, label, val string) []byte {
	if val == "" {
		return b
	}
	mark := len(b)
	b = append(b, csKeys[i-1][0]...)
	b = append(b, label...)
	n := len(b)
	b = appendExt(b, csKeys[i-1][1], val, maxCS)
	if len(b) == n { // value empty once cleaned: no label either
		return b[:mark]
	}
	return b
}

// appendMillis writes key + epoch milliseconds, the CEF timestamp form
// without zone or locale ambiguity; nothing for the zero time.
func appendMillis(b []byte, key string, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = append(b, key...)
	return strconv.AppendInt(b, t.UnixMilli(), 10)
}

// appendIPv4 writes key + s when s is an IPv4 address (CEF:0 address fields
// take IPv4 only); nothing otherwise.
func appendIPv4(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return b
	}
	a = a.Unmap()
	if !a.Is4() {
		return b
	}
	b = append(b, key...)
	return a.AppendTo(b)
}

// normMAC is formats.NormMAC with this format's separator.
func normMAC(buf *[17]byte, s string) bool { return formats.NormMAC(buf, s, ':') }
