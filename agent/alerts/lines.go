package alerts

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
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
// onErr is told (in line order). Blank lines are skipped. Up to
// DefaultWorkers alerts are enriched at once (Ordered: each still counts
// for the lines after it). It returns on EOF, once every answer is
// written, or on a write error.
func RunJSONLines(ctx context.Context, in io.Reader, out io.Writer, e *Enricher, onErr func(line int, err error)) error {
	br := bufio.NewReaderSize(in, 64<<10)
	bw := bufio.NewWriter(out)
	o := NewOrdered(e, 0)
	var mu sync.Mutex
	var werr error
	failed := func() error { mu.Lock(); defer mu.Unlock(); return werr }
	write := func(js []byte) {
		mu.Lock()
		defer mu.Unlock()
		if werr != nil {
			return
		}
		bw.Write(js)
		if err := bw.WriteByte('\n'); err != nil {
			werr = err
			return
		}
		// Flush per alert: a consumer waits for each answer (pipes, SOAR).
		werr = bw.Flush()
	}
	refuse := func(n int, line []byte, err error) {
		err = fmt.Errorf("line %d: %w", n, err)
		if onErr != nil {
			onErr(n, err)
		}
		write(ErrorDoc(line, err, time.Now()))
	}
	readErr := func() error {
		for n := 1; failed() == nil; n++ {
			line, tooLong, err := readLine(br, MaxAlertBytes)
			if len(line) == 0 && !tooLong && err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if len(trimSpace(line)) == 0 && !tooLong {
				if err != nil {
					return eofIsNil(err)
				}
				continue
			}
			var a *Alert
			perr := ErrTooLarge
			if !tooLong {
				a, perr = ParseJSON(line, time.Now())
			}
			if perr != nil {
				o.After(func() { refuse(n, line, perr) })
			} else {
				a.Source = "stdin"
				o.Submit(ctx, a, func(js []byte, err error) {
					if err != nil {
						refuse(n, line, err)
						return
					}
					write(js)
				})
			}
			if err != nil {
				// A read error that came with the last bytes is still
				// an error (enrich must not exit 0 on a failed read).
				return eofIsNil(err)
			}
		}
		return nil
	}()
	o.Close()
	if readErr != nil {
		return readErr
	}
	return failed()
}

func eofIsNil(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
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
