package cef

import (
	"strconv"

	"github.com/vmlineage/vmlineage/formats"
)

// AppendCheckpoint appends the CEF line of a chain checkpoint: signature
// chain.checkpoint, severity 1, the head in cn3 (chainSeq) and flexString1
// (chainHash), as records carry their own links (see README.md).
func AppendCheckpoint(dst []byte, cp *formats.Checkpoint, c *formats.Context) []byte {
	if c == nil {
		c = &formats.Context{}
	}
	b := append(dst, "CEF:0|"+formats.Vendor+"|"+formats.Product+"|"...)
	ver := c.AgentVersion
	if ver == "" {
		ver = "unknown"
	}
	b = appendHeader(b, ver, maxVersion)
	b = append(b, "|"+formats.CheckpointSignatureID+"|Chain checkpoint|1|"...)
	b = appendMillis(b, "rt=", cp.At)
	b = appendExt(b, " externalId=", formats.CheckpointID(cp), maxExternalID)
	b = append(b, " cat=/vmlineage/chain/checkpoint deviceProcessName=vmlineage"...)
	b = appendExt(b, " reason=", cp.Reason, maxReason)
	b = appendExt(b, " msg=", "vmlineage chain checkpoint: "+strconv.FormatInt(cp.Seq, 10)+" records sealed", maxMsg)
	b = appendCS(b, 3, LabelPoolUUID, cp.PoolUUID)
	b = append(b, " cn3Label="+LabelChainSeq+" cn3="...)
	b = strconv.AppendInt(b, cp.Seq, 10)
	b = appendExt(b, " flexString1Label="+LabelChainHash+" flexString1=", cp.Hash, maxFlex)
	return b
}
