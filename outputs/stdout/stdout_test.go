package stdout

import (
	"bytes"
	"context"
	"testing"

	"github.com/vmlineage/vmlineage/outputs"
)

func TestLines(t *testing.T) {
	var b bytes.Buffer
	o := New(&b)
	o.Send(context.Background(), []outputs.Item{{Payload: []byte("CEF:0|a|b|1|c|d|3|msg=x\\ny")}, {Payload: []byte("{\n\"a\":1}")}})
	if b.String() != "CEF:0|a|b|1|c|d|3|msg=x\\ny\n{ \"a\":1}\n" || o.Health().Sent != 2 {
		t.Fatalf("got %q", b.String())
	}
}
