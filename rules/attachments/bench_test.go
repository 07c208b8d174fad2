package attachments_test

// Run by `make bench`: go test -run '^$' -bench . ./rules/attachments/
//
// BenchmarkCheckCost: end of message of the engine over a mixed corpus (attachtest.Mixed), with the
// attachments check and with no check, in the same run; reports both per message and their ratio.

import (
	"context"
	"testing"
	"time"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/attachments/attachtest"
)

func BenchmarkCheckCost(b *testing.B) {
	msgs := attachtest.Mixed(200)
	total := 0
	for _, m := range msgs {
		total += len(m)
	}
	without := policytest.Engine(b, policytest.Policy)
	with := policytest.Engine(b, policytest.Policy+"\n[checks.attachments]\n")
	run := func(e *policy.Engine) time.Duration {
		start := time.Now()
		for _, m := range msgs {
			s := policy.NewSession()
			s.Headers = policytest.Headers(m)
			out := e.EOM(context.Background(), s, policytest.Msg(m))
			if out.Action == policy.ActTempfail {
				b.Fatalf("tempfail: %v", out.Reply)
			}
		}
		return time.Since(start)
	}
	run(with)
	run(without)
	var tWith, tWithout time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Interleaved, so that the machine's noise hits both alike.
		tWithout += run(without)
		tWith += run(with)
	}
	n := float64(b.N * len(msgs))
	b.ReportMetric(float64(tWith.Microseconds())/n, "us/msg_with")
	b.ReportMetric(float64(tWithout.Microseconds())/n, "us/msg_without")
	b.ReportMetric(tWith.Seconds()/tWithout.Seconds(), "ratio")
	b.ReportMetric(float64(total)*float64(b.N)/tWith.Seconds()/(1<<20), "MB/s_with")
	b.Logf("%d messages (%d KB), end of message with the attachments check %.1f us/msg, with no check %.1f us/msg: %.1fx",
		len(msgs), total>>10, float64(tWith.Microseconds())/n, float64(tWithout.Microseconds())/n, tWith.Seconds()/tWithout.Seconds())
}
