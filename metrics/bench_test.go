package metrics_test

import (
	"sort"
	"testing"
	"time"

	"github.com/moatmail/moat/metrics"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

// BenchmarkThroughputRatio measures messages per second through an engine (the test check at every stage)
// with metrics on as a ratio to metrics off, in the same run. Short rounds alternate off, on, on, off, so that
// the machine's noise and drift hit both alike, and the ratio reported is the median of the per-pair ratios.
// Target: ratio >= 0.98.
func BenchmarkThroughputRatio(b *testing.B) {
	eng := policytest.Engine(b, policytest.Policy+"[checks.test]\nreject_to = [\"bad@example.test\"]\n")
	one := func() { send(eng, "hello\r\n", "a@example.test", "bad@example.test") }
	const perRound, pairs = 500, 20
	set := func(enable bool) {
		if enable {
			metrics.Enable("bench")
			policy.SetObserver(metrics.Observer)
		} else {
			metrics.Disable()
			policy.SetObserver(nil)
		}
	}
	round := func(enable bool) time.Duration {
		set(enable)
		start := time.Now()
		for j := 0; j < perRound; j++ {
			one()
		}
		return time.Since(start)
	}
	round(true) // warm: label children created, caches filled
	var ratios []float64
	var off, on time.Duration
	for i := 0; i < b.N; i++ {
		for p := 0; p < pairs; p++ {
			var a, c time.Duration
			if p%2 == 0 {
				a = round(false)
				c = round(true)
			} else {
				c = round(true)
				a = round(false)
			}
			off, on = off+a, on+c
			ratios = append(ratios, a.Seconds()/c.Seconds())
		}
	}
	set(false)
	sort.Float64s(ratios)
	n := float64(perRound * pairs * b.N)
	b.ReportMetric(n/off.Seconds(), "msgs/s-off")
	b.ReportMetric(n/on.Seconds(), "msgs/s-on")
	b.ReportMetric(ratios[len(ratios)/2], "ratio-on/off")
}
