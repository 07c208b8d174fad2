package greylist

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/store"
	"github.com/moatmail/moat/test/stack"
)

// benchRcpt runs b.N recipient decisions through the check (normalisation, client key, store) from 16
// concurrent sessions and reports decisions per second and the 99th percentile latency. Every other decision
// is the retry of the one before it, after the delay.
func benchRcpt(b *testing.B, st store.Store) {
	clk := &fakeClock{now: start}
	cfg := DefaultConfig()
	cfg.AutoWhitelist = 0
	c := New(cfg, st, nil, clk.Now)
	run := time.Now().UnixNano()
	const workers = 16
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				n := i / 2
				s := policy.NewSession()
				s.ClientIP = netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), 1})
				s.Helo = "mx.example.net"
				s.From, _ = addr.Parse(fmt.Sprintf("prvs=4123a1b2c3=s%d-%d@example.net", n, run))
				addr, _ := addr.Parse("rcpt@example.org")
				r := &policy.Recipient{Addr: addr}
				s.Rcpts = []*policy.Recipient{r}
				if i%2 == 1 {
					c := New(c.cfg, c.st, c.log, func() time.Time { return start.Add(10 * time.Minute) })
					t := time.Now()
					c.Rcpt(context.Background(), s, r)
					lat[i] = time.Since(t)
					continue
				}
				t := time.Now()
				c.Rcpt(context.Background(), s, r)
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkRcpt: greylisting decisions through the check at 16 concurrent sessions, SQLite and Redis.
// Run: go test -run '^$' -bench BenchmarkRcpt -benchtime 20000x ./rules/greylist
func BenchmarkRcpt(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		st, err := store.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "b.db"), false)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchRcpt(b, st)
	})
	b.Run("redis", func(b *testing.B) {
		srv := stack.StartRedis(b)
		cfg := store.DefaultConfig()
		cfg.Backend, cfg.RedisAddr = "redis", srv.Addr
		st := store.OpenRedis(cfg)
		defer st.Close()
		benchRcpt(b, st)
	})
}
