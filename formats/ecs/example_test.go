package ecs_test

import (
	"fmt"

	"github.com/vmlineage/vmlineage/formats/ecs"
	"github.com/vmlineage/vmlineage/formats/internal/fixtures"
)

func ExampleAppendRecord() {
	tc := fixtures.Base()
	buf := make([]byte, 0, 4096) // reuse across records: no allocation per record
	buf = ecs.AppendRecord(buf[:0], &tc.R, &tc.C)
	fmt.Println(string(buf))
	// Output:
	// {"@timestamp":"2026-11-25T10:00:02.468Z","ecs":{"version":"9.4.0"},"message":"clone of VM web-01 from base-01 on host xen1.lab.example in pool lab pool succeeded","event":{"kind":"event","category":["configuration"],"type":["creation"],"action":"vm-clone","outcome":"success","id":"0858b8cab2130c1c8ef8e6c5830e65d7","dataset":"vmlineage.lifecycle","module":"vmlineage","provider":"xapi","severity":4,"start":"2026-11-25T10:00:00.123Z","end":"2026-11-25T10:00:02.468Z","duration":2345000000},"host":{"name":"web-01","id":"0b4f3c9e-1111-2222-3333-444455556666","type":"vm","ip":["192.0.2.55","2001:db8::55"],"mac":["AA-BB-CC-DD-EE-0F"]},"cloud":{"provider":"xen","instance":{"id":"0b4f3c9e-1111-2222-3333-444455556666","name":"web-01"}},"observer":{"type":"hypervisor","vendor":"Xen","product":"XAPI","hostname":"xen1.lab.example","ip":["192.0.2.10"]},"orchestrator":{"type":"xapi","cluster":{"id":"8d6e3c1a-0f3a-4b6e-9d1c-3a5b7c9d0e1f","name":"lab pool"},"resource":{"type":"vm","id":"0b4f3c9e-1111-2222-3333-444455556666","name":"web-01","parent":{"type":"vm"}}},"user":{"name":"alice","id":"subject-42"},"user_agent":{"name":"XenCenter"},"source":{"ip":"198.51.100.7"},"related":{"hosts":["web-01","xen1.lab.example","base-01"],"ip":["192.0.2.55","2001:db8::55","192.0.2.10","198.51.100.7"],"user":["alice"]},"agent":{"type":"vmlineage","name":"mgmt1","version":"0.1.0"},"xen":{"source":"xapi","operation":"VM.clone","result":"success","task":{"uuid":"3f2a9c1d-4b5e-6f70-8192-a3b4c5d6e7f8","id":"3f2a9c1d4b5e"},"pool":{"uuid":"8d6e3c1a-0f3a-4b6e-9d1c-3a5b7c9d0e1f","name":"lab pool"},"host":{"uuid":"6f3c0a9e-aaaa-bbbb-cccc-0123456789ab"},"vm":{"power_state":"Halted"}},"vmlineage":{"activity":"clone","kind":"vm","parent":{"uuid":"5a1e9f00-7777-8888-9999-aaaabbbbcccc","name":"base-01"},"ancestor_path":["11111111-2222-3333-4444-555555555555","5a1e9f00-7777-8888-9999-aaaabbbbcccc"],"depth":2,"family_root":"11111111-2222-3333-4444-555555555555","chain":{"seq":42,"prev":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","hash":"60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"}},"data_stream":{"type":"logs","dataset":"vmlineage.lifecycle","namespace":"default"}}
}
