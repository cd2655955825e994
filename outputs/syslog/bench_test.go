package syslog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/internal/receivers"
	"github.com/vmlineage/vmlineage/outputs"
)

const benchCEF = `CEF:0|vmlineage|vmlineage|0.1.0|vm.clone|VM cloned|3|rt=1764064800123 end=1764064800456 act=clone outcome=success dvchost=xen1.example dhost=web-01 suser=root externalId=3f2a9c1e-1111-2222-3333-444455556666 cs1Label=vmUuid cs1=0b4f3c9e-1111-2222-3333-444455556666 cs2Label=parentVmUuid cs2=9a8b7c6d-1111-2222-3333-444455556666`

func BenchmarkFormat(b *testing.B) {
	f, _ := NewFormatter(FormatConfig{Hostname: "xen1.example", ProcID: "42"})
	ts := time.Now()
	var buf, msg []byte
	payload := []byte(benchCEF)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		msg = f.Append(msg[:0], "0123456789abcdef0123456789abcdef", ts, payload)
		buf = AppendOctetCounted(buf[:0], msg)
	}
}

// BenchmarkRsyslogTCP: records/s from Send until rsyslog wrote them to its
// file (octet-counted RFC 5424 over TCP), and the peak RSS of this process.
func BenchmarkRsyslogTCP(b *testing.B) {
	r := receivers.StartRsyslogWith(b, receivers.RsyslogOptions{NoCEFParse: true})
	o, err := New(Config{Network: "tcp", Address: r.TCPAddr, FormatConfig: FormatConfig{Hostname: "xen1.example"}})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	batch := make([]outputs.Item, 1000)
	for i := range batch {
		batch[i] = outputs.Item{ID: fmt.Sprintf("%032x", i), Payload: []byte(benchCEF), Time: time.Now()}
	}
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; sent += len(batch) {
		n := min(len(batch), b.N-sent)
		if err := o.Send(context.Background(), batch[:n]); err != nil {
			b.Fatal(err)
		}
	}
	sendTime := time.Since(start)
	// Delivered = written by rsyslog; count its lines incrementally.
	deadline := time.Now().Add(2 * time.Minute)
	lines, off := 0, int64(0)
	buf := make([]byte, 1<<20)
	for lines < b.N {
		if f, err := os.Open(r.Out); err == nil {
			for {
				n, err := f.ReadAt(buf, off)
				lines += bytes.Count(buf[:n], []byte{'\n'})
				off += int64(n)
				if err != nil || n == 0 {
					break
				}
			}
			f.Close()
		}
		if lines >= b.N {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("rsyslog wrote %d of %d", lines, b.N)
		}
		time.Sleep(20 * time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
	b.ReportMetric(float64(b.N)/sendTime.Seconds(), "sent/s")
	b.ReportMetric(float64(receivers.PeakRSS())/(1<<20), "peakRSS-MiB")
}

// BenchmarkTCPSink: the output's own ceiling, into a socket that discards.
func BenchmarkTCPSink(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	o, err := New(Config{Network: "tcp", Address: l.Addr().String(), FormatConfig: FormatConfig{Hostname: "xen1.example"}})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	batch := make([]outputs.Item, 1000)
	for i := range batch {
		batch[i] = outputs.Item{ID: fmt.Sprintf("%032x", i), Payload: []byte(benchCEF), Time: time.Now()}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; sent += len(batch) {
		if err := o.Send(context.Background(), batch[:min(len(batch), b.N-sent)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
