package alerts

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// dataThenErr returns its data and, with the last of it, err.
type dataThenErr struct {
	data []byte
	err  error
}

func (r *dataThenErr) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	if len(r.data) == 0 {
		return n, r.err
	}
	return n, nil
}

// A read error that arrives with the last bytes is returned (so `vmlineage
// enrich` fails), after the alerts read before it are answered.
func TestRunJSONLinesReturnsReadErrorWithLastBytes(t *testing.T) {
	e := NewEnricher(threatModelService(t), nil, nil)
	boom := errors.New("read /dev/stdin: input/output error")
	for _, tail := range []string{alertFor("name", "vm2", 1), "  "} {
		in := &dataThenErr{data: []byte(alertFor("name", "vm1", 0) + "\n" + tail), err: boom}
		var out strings.Builder
		if err := RunJSONLines(context.Background(), in, &out, e, nil); !errors.Is(err, boom) {
			t.Errorf("tail %.20q: RunJSONLines returned %v, want the read error", tail, err)
		}
		if !strings.Contains(out.String(), `"matched":true`) {
			t.Errorf("tail %.20q: the alerts before the error are not answered: %s", tail, out.String())
		}
	}
}

// Anything after the alert's JSON object, a stray '}' or ']' included, is
// refused.
func TestParseJSONTrailingData(t *testing.T) {
	for _, in := range []string{`{"a":1}}`, `{"a":1}]`, `{"a":1} x`, `{"a":1}{}`} {
		if _, err := ParseJSON([]byte(in), time.Now()); err == nil || !strings.Contains(err.Error(), "data after the JSON object") {
			t.Errorf("%s: %v", in, err)
		}
	}
	if _, err := ParseJSON([]byte("{\"a\":1} \t\r\n"), time.Now()); err != nil {
		t.Errorf("trailing space refused: %v", err)
	}
}
