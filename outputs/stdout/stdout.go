// Package stdout writes payloads as lines to standard output (or any
// writer), for `vmlineage demo` and shell pipelines.
package stdout

import (
	"bufio"
	"context"
	"io"
	"os"
	"sync"

	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/outputs/file"
)

// Output writes one payload per line and flushes after each Send.
type Output struct {
	outputs.Counters
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
}

// New writes to w; nil means os.Stdout.
func New(w io.Writer) *Output {
	if w == nil {
		w = os.Stdout
	}
	return &Output{w: bufio.NewWriterSize(w, 64<<10)}
}

// Name implements outputs.Output.
func (o *Output) Name() string { return "stdout" }

// Send implements outputs.Output.
func (o *Output) Send(ctx context.Context, items []outputs.Item) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, it := range items {
		o.buf = file.Line(o.buf[:0], it.Payload)
		if _, err := o.w.Write(o.buf); err != nil {
			o.Fail(len(items), err)
			return err
		}
	}
	if err := o.w.Flush(); err != nil {
		o.Fail(len(items), err)
		return err
	}
	o.AddSent(len(items))
	return nil
}

// Close flushes.
func (o *Output) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.w.Flush()
}
