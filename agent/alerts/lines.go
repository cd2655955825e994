package alerts

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// maxOriginal bounds how much of a refused alert is copied into the error
// document that stands in for it.
const maxOriginal = 64 << 10

// RunJSONLines reads ECS JSON alerts, one per line, and writes one enriched
// alert per line in the same order. A line that is not an alert (bad JSON,
// too long) is not dropped: an error document takes its place, carrying
// the line's text in event.original and the reason in vmlineage.error, and
// onErr is told. Blank lines are skipped. It returns on EOF or a write error.
func RunJSONLines(ctx context.Context, in io.Reader, out io.Writer, e *Enricher, onErr func(line int, err error)) error {
	br := bufio.NewReaderSize(in, 64<<10)
	bw := bufio.NewWriter(out)
	defer bw.Flush()
	for n := 1; ; n++ {
		line, tooLong, err := readLine(br, MaxAlertBytes)
		if len(line) == 0 && !tooLong && err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if len(trimSpace(line)) == 0 && !tooLong {
			if err != nil {
				return nil
			}
			continue
		}
		var js []byte
		a, perr := (*Alert)(nil), error(nil)
		if tooLong {
			perr = ErrTooLarge
		} else {
			a, perr = ParseJSON(line, time.Now())
		}
		if perr == nil {
			a.Source = "stdin"
			js, perr = e.Enrich(ctx, a)
		}
		if perr != nil {
			perr = fmt.Errorf("line %d: %w", n, perr)
			if onErr != nil {
				onErr(n, perr)
			}
			js = ErrorDoc(line, perr, time.Now())
		}
		bw.Write(js)
		if err := bw.WriteByte('\n'); err != nil {
			return err
		}
		// Flush per alert: a consumer waits for each answer (pipes, SOAR).
		if err := bw.Flush(); err != nil {
			return err
		}
		if err != nil {
			return nil
		}
	}
}

// readLine returns the next line without its newline; a line longer than
// max is consumed and reported as tooLong with its first max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, bool, error) {
	var buf []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > max {
			tooLong = true
			if room := max - len(buf); room > 0 {
				buf = append(buf, chunk[:room]...)
			}
		} else {
			buf = append(buf, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(buf) > 0 && buf[len(buf)-1] == '\n' {
			buf = buf[:len(buf)-1]
		}
		return buf, tooLong, err
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// ErrorDoc is the document sent in place of an input that could not be read
// as an alert, so that nothing is silently lost.
func ErrorDoc(raw []byte, err error, now time.Time) []byte {
	orig := raw
	if len(orig) > maxOriginal {
		orig = orig[:maxOriginal]
	}
	s := string(orig)
	if !utf8.ValidString(s) {
		s = fmt.Sprintf("%q", orig)
	}
	doc := map[string]any{
		"@timestamp": timeString(now),
		"event":      map[string]any{"kind": "pipeline_error", "original": s},
		"error":      map[string]any{"message": err.Error()},
		"vmlineage":  map[string]any{"matched": false, "error": err.Error()},
	}
	js, _ := json.Marshal(doc)
	return js
}
