package metrics_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatmail/moat/metrics"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	_ "github.com/moatmail/moat/test/scriptedcheck"
)

// sample returns the value of the series name{labels} (a histogram's sample count), 0 when absent.
func sample(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func on(t testing.TB) {
	metrics.Enable("test")
	policy.SetObserver(metrics.Observer)
	t.Cleanup(func() {
		metrics.Disable()
		policy.SetObserver(nil)
	})
}

func send(eng *policy.Engine, body string, rcpts ...string) policy.Decision {
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	tx := policy.NewTransaction(eng, s, policy.SpoolSettings{})
	ctx := context.Background()
	tx.Connect(ctx)
	tx.Mail(ctx, policy.MailCommand{From: "sender@example.org"})
	for _, r := range rcpts {
		tx.Rcpt(ctx, r, "")
	}
	tx.Header("Subject", " hello")
	tx.EndHeaders(ctx)
	tx.Body([]byte(body))
	return tx.EOM(ctx).Decision
}

// TestEngineCounts runs real transactions through an engine with the scripted test check and checks that
// every engine-side metric moves by what happened: one message accepted with one recipient refused, one
// message refused at end of message, one check panic.
func TestEngineCounts(t *testing.T) {
	on(t)
	eng := policytest.Engine(t, policytest.Policy+`
[checks.test]
reject_to = ["bad@example.test"]
panic_to = ["boom@example.test"]
reject_body = "REJECT-ME"
`)
	reg := metrics.NewRegistry(nil)
	series := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"moat_messages_total", map[string]string{"action": "accept", "reason": "none"}, 2},
		{"moat_messages_total", map[string]string{"action": "reject", "reason": "test/test-body"}, 1},
		{"moat_recipients_total", map[string]string{"action": "accept"}, 2},
		{"moat_recipients_total", map[string]string{"action": "reject"}, 2},
		{"moat_recipients_total", map[string]string{"action": "tempfail"}, 1},
		{"moat_check_results_total", map[string]string{"check": "test", "result": "fail"}, 2},
		{"moat_panics_total", nil, 1},
		// Five recipients, one run of the test check each at RCPT.
		{"moat_check_duration_seconds", map[string]string{"check": "test", "stage": "rcpt"}, 5},
	}
	before := make([]float64, len(series))
	for i, s := range series {
		before[i] = sample(t, reg, s.name, s.labels)
	}
	if d := send(eng, "fine\r\n", "a@example.test", "bad@example.test"); d.Action != policy.ActAccept {
		t.Fatalf("first message: got %v, want accept", d.Action)
	}
	if d := send(eng, "REJECT-ME\r\n", "a@example.test"); d.Action != policy.ActReject {
		t.Fatalf("second message: got %v, want reject", d.Action)
	}
	if d := send(eng, "fine\r\n", "boom@example.test", "a@example.test"); d.Action != policy.ActAccept {
		t.Fatalf("third message: got %v, want accept", d.Action)
	}
	for i, s := range series {
		if d := sample(t, reg, s.name, s.labels) - before[i]; d != s.want {
			t.Errorf("%s%v moved by %v, want %v", s.name, s.labels, d, s.want)
		}
	}
}
