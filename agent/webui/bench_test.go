package webui

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkAPI10k times the two answers the page waits on for a pool of
// 10,000 VMs: the tree, and the pool at a past time.
func BenchmarkAPI10k(b *testing.B) {
	st := bigStore(b, 10000)
	ts := httptest.NewServer(New(st, Options{}))
	defer ts.Close()
	mid := tmStart.Add(5000 * time.Minute).UnixMilli()
	for _, c := range []struct{ name, path string }{
		{"tree", "/api/tree"},
		{"at", fmt.Sprintf("/api/at?t=%d", mid)},
		{"search", "/api/search?q=web-0"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var n int64
			for i := 0; i < b.N; i++ {
				resp, err := ts.Client().Get(ts.URL + c.path)
				if err != nil {
					b.Fatal(err)
				}
				k, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%s: %d", c.path, resp.StatusCode)
				}
				n = k
			}
			b.ReportMetric(float64(n), "bytes")
		})
	}
}

// BenchmarkStateAt10k compares lineage.Store.StateAt with the set-wise read
// the /api/at endpoint uses, on 10,000 VMs that each carry a name span.
func BenchmarkStateAt10k(b *testing.B) {
	st := bigStore(b, 10000)
	srv := New(st, Options{})
	mid := tmStart.Add(5000 * time.Minute)
	ctx := context.Background()
	b.Run("webui", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := srv.stateAt(ctx, "", mid); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lineage", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := st.StateAt(ctx, "", mid); err != nil {
				b.Fatal(err)
			}
		}
	})
}
