package cef_test

import (
	"fmt"

	"github.com/vmlineage/vmlineage/formats/cef"
	"github.com/vmlineage/vmlineage/formats/internal/fixtures"
)

func ExampleAppendRecord() {
	tc := fixtures.Base()
	buf := make([]byte, 0, 2048) // reuse across records: no allocation per record
	buf = cef.AppendRecord(buf[:0], &tc.R, &tc.C)
	fmt.Println(string(buf))
	// Output:
	// CEF:0|vmlineage|vmlineage|0.1.0|vm.clone|VM clone succeeded|4|rt=1795600802468 start=1795600800123 end=1795600802468 act=clone outcome=success cat=/vmlineage/lifecycle/clone dvchost=xen1.lab.example dvc=192.0.2.10 deviceExternalId=6f3c0a9e-aaaa-bbbb-cccc-0123456789ab externalId=0858b8cab2130c1c8ef8e6c5830e65d7 deviceProcessName=xapi deviceFacility=xapi dhost=web-01 dst=192.0.2.55 dmac=AA:BB:CC:DD:EE:0F suser=alice suid=subject-42 src=198.51.100.7 requestClientApplication=XenCenter msg=clone of VM web-01 from base-01 on host xen1.lab.example in pool lab pool succeeded cs1Label=vmUuid cs1=0b4f3c9e-1111-2222-3333-444455556666 cs2Label=parentVmUuid cs2=5a1e9f00-7777-8888-9999-aaaabbbbcccc cs3Label=poolUuid cs3=8d6e3c1a-0f3a-4b6e-9d1c-3a5b7c9d0e1f cs4Label=taskUuid cs4=3f2a9c1d-4b5e-6f70-8192-a3b4c5d6e7f8 cs5Label=familyRoot cs5=11111111-2222-3333-4444-555555555555 cn1Label=durationMs cn1=2345 cn2Label=lineageDepth cn2=2 cn3Label=chainSeq cn3=42 flexString1Label=chainHash flexString1=60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752 flexString2Label=chainPrev flexString2=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
}
