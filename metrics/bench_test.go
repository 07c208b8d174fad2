package metrics_test

import (
	"testing"
	"time"

	"github.com/moatmail/moat/metrics"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

// BenchmarkThroughputRatio measures messages per second through an engine (the test check at every stage)
// with metrics on as a ratio to metrics off, in the same run: rounds alternate, so that the machine's noise
// hits both alike. Target: ratio >= 0.98.
func BenchmarkThroughputRatio(b *testing.B) {
	eng := policytest.Engine(b, policytest.Policy+"[checks.test]\nreject_to = [\"bad@example.test\"]\n")
	one := func() { send(eng, "hello\r\n", "a@example.test", "bad@example.test") }
	const perRound = 2000
	var off, on time.Duration
	for i := 0; i < b.N; i++ {
		for _, enable := range []bool{false, true} {
			if enable {
				metrics.Enable("bench")
				policy.SetObserver(metrics.Observer)
			} else {
				metrics.Disable()
				policy.SetObserver(nil)
			}
			start := time.Now()
			for j := 0; j < perRound; j++ {
				one()
			}
			if enable {
				on += time.Since(start)
			} else {
				off += time.Since(start)
			}
		}
	}
	metrics.Disable()
	policy.SetObserver(nil)
	b.ReportMetric(float64(perRound*b.N)/off.Seconds(), "msgs/s-off")
	b.ReportMetric(float64(perRound*b.N)/on.Seconds(), "msgs/s-on")
	b.ReportMetric(off.Seconds()/on.Seconds(), "ratio-on/off")
}
