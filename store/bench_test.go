package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// memStore is the benchmark baseline: the same decide() over a map behind a mutex, no storage at all.
type memStore struct {
	mu   sync.Mutex
	recs map[string]*GreyEntry
	cls  map[string]*ClientEntry
}

func (m *memStore) Greylist(_ context.Context, r GreyRequest) (GreyResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, cl, ncl := m.recs[r.ID()], m.cls[r.Client], m.cls[r.networkKey()]
	nr, nc, nnc, res := decide(rec, cl, ncl, r)
	if nr != nil {
		m.recs[nr.ID] = nr
	}
	for _, c := range []*ClientEntry{nc, nnc} {
		if c != nil {
			m.cls[c.Client] = c
		}
	}
	return res, nil
}

type decider interface {
	Greylist(context.Context, GreyRequest) (GreyResult, error)
}

// benchRequest is decision i of the workload: mostly new triplets (each triplet is tried twice: a first
// attempt, then a retry after the delay), from 256 client networks, with auto-whitelisting off so that every
// decision touches a triplet.
func benchRequest(run string, i int) GreyRequest {
	n := i / 2
	r := req(fmt.Sprintf("10.%d.%d.0/24", n%256, (n/256)%256), fmt.Sprintf("s%d-%s@example.com", n, run), "rcpt@example.org", t0)
	if i%2 == 1 {
		r.Now = t0.Add(10 * time.Minute)
	}
	r.Params.AutoWhitelist = 0
	return r
}

// runDecisions makes n decisions with 16 concurrent workers and returns decisions per second and the 99th
// percentile latency.
func runDecisions(tb testing.TB, d decider, run string, n int) (float64, time.Duration) {
	const workers = 16
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t := time.Now()
				if _, err := d.Greylist(context.Background(), benchRequest(run, i)); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		tb.Fatal(err)
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	return float64(n) / elapsed.Seconds(), lat[(len(lat)*99)/100]
}

// benchStore reports decisions/s, p99 latency and throughput as a ratio of the in-memory baseline measured
// in the same run (the machine is shared: only ratios compare across runs).
func benchStore(b *testing.B, d decider) {
	base, _ := runDecisions(b, &memStore{recs: map[string]*GreyEntry{}, cls: map[string]*ClientEntry{}}, "base", 20000)
	b.ResetTimer()
	perSec, p99 := runDecisions(b, d, fmt.Sprintf("run%d", time.Now().UnixNano()), b.N)
	b.StopTimer()
	b.ReportMetric(perSec, "decisions/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(perSec/base, "x-of-memory")
}

// BenchmarkGreylist: greylisting decisions at 16 concurrent sessions, per backend.
// Run: go test -run '^$' -bench 'BenchmarkGreylist$' -benchtime 20000x ./store
func BenchmarkGreylist(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		st, err := OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "bench.db"), false)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchStore(b, st)
	})
	b.Run("sqlite-full-sync", func(b *testing.B) {
		st, err := OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "bench.db"), true)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchStore(b, st)
	})
	b.Run("redis", func(b *testing.B) {
		srv := stack.StartRedis(b)
		cfg := DefaultConfig()
		cfg.Backend, cfg.RedisAddr, cfg.RedisPrefix = "redis", srv.Addr, randomPrefix()
		st := OpenRedis(cfg)
		defer st.Close()
		benchStore(b, st)
	})
}

// BenchmarkGreylistCompare measures both backends in the same run, back to back, and reports Redis's
// throughput as a ratio of SQLite's: the figure to compare across runs on a shared machine.
// Run: go test -run '^$' -bench BenchmarkGreylistCompare -benchtime 20000x ./store
func BenchmarkGreylistCompare(b *testing.B) {
	sq, err := OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "cmp.db"), false)
	if err != nil {
		b.Fatal(err)
	}
	defer sq.Close()
	srv := stack.StartRedis(b)
	cfg := DefaultConfig()
	cfg.Backend, cfg.RedisAddr, cfg.RedisPrefix = "redis", srv.Addr, randomPrefix()
	rd := OpenRedis(cfg)
	defer rd.Close()
	// b.N decisions on each backend (so that -benchtime 20000x means the same as for BenchmarkGreylist).
	b.ResetTimer()
	sqRate, sqP99 := runDecisions(b, sq, "cmp-sq", b.N)
	rdRate, rdP99 := runDecisions(b, rd, "cmp-rd", b.N)
	b.StopTimer()
	b.ReportMetric(sqRate, "sqlite-decisions/s")
	b.ReportMetric(rdRate, "redis-decisions/s")
	b.ReportMetric(rdRate/sqRate, "redis/sqlite")
	b.ReportMetric(float64(sqP99.Microseconds())/1000, "sqlite-p99-ms")
	b.ReportMetric(float64(rdP99.Microseconds())/1000, "redis-p99-ms")
}
