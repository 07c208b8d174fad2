package metrics

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	_ "github.com/moatmail/moat/test/testcheck"
)

// enabled turns recording on for one test (the collectors are package-wide: tests compare deltas).
func enabled(t *testing.T) {
	t.Helper()
	Enable("test")
	policy.SetObserver(Observer)
	t.Cleanup(func() {
		Disable()
		policy.SetObserver(nil)
	})
}

func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// TestEngineCounts runs real transactions through an engine with the scripted test check and checks that
// every engine-side metric moves by what happened: one message accepted with one recipient refused, one
// message refused at end of message, one check panic.
func TestEngineCounts(t *testing.T) {
	enabled(t)
	eng := policytest.Engine(t, policytest.Policy+`
[checks.test]
reject_to = ["bad@example.test"]
panic_to = ["boom@example.test"]
reject_body = "REJECT-ME"
`)
	accept := messages.WithLabelValues("accept", "none")
	rejectBody := messages.WithLabelValues("reject", "test/test-body")
	rcptAccept := recipients.WithLabelValues("accept")
	rcptReject := recipients.WithLabelValues("reject")
	rcptTempfail := recipients.WithLabelValues("tempfail")
	fail := checkResults.WithLabelValues("test", "fail")
	before := map[string]float64{"accept": value(t, accept), "rejectBody": value(t, rejectBody),
		"rcptAccept": value(t, rcptAccept), "rcptReject": value(t, rcptReject), "rcptTempfail": value(t, rcptTempfail),
		"fail": value(t, fail), "panics": value(t, panics)}
	durBefore := histogramCount(t, "test", "rcpt")

	send := func(body string, rcpts ...string) policy.Decision {
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
	if d := send("fine\r\n", "a@example.test", "bad@example.test"); d.Action != policy.ActAccept {
		t.Fatalf("first message: got %v, want accept", d.Action)
	}
	if d := send("REJECT-ME\r\n", "a@example.test"); d.Action != policy.ActReject {
		t.Fatalf("second message: got %v, want reject", d.Action)
	}
	if d := send("fine\r\n", "boom@example.test", "a@example.test"); d.Action != policy.ActAccept {
		t.Fatalf("third message: got %v, want accept", d.Action)
	}

	want := map[string]float64{"accept": 2, "rejectBody": 1, "rcptAccept": 2, "rcptReject": 2, "rcptTempfail": 1,
		"fail": 2, "panics": 1}
	got := map[string]float64{"accept": value(t, accept), "rejectBody": value(t, rejectBody),
		"rcptAccept": value(t, rcptAccept), "rcptReject": value(t, rcptReject), "rcptTempfail": value(t, rcptTempfail),
		"fail": value(t, fail), "panics": value(t, panics)}
	for k, w := range want {
		if d := got[k] - before[k]; d != w {
			t.Errorf("%s moved by %v, want %v", k, d, w)
		}
	}
	// Five recipients, one run of the test check each at RCPT.
	if d := histogramCount(t, "test", "rcpt") - durBefore; d != 5 {
		t.Errorf("moat_check_duration_seconds{check=test,stage=rcpt} count moved by %d, want 5", d)
	}
}

func histogramCount(t *testing.T, check, stage string) uint64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(checkDuration)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["check"] == check && labels["stage"] == stage {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// TestOffRecordsNothing: without Enable the recording functions and the engine leave every metric alone.
func TestOffRecordsNothing(t *testing.T) {
	Disable()
	c := dnsQueries.WithLabelValues("NOERROR")
	before := value(t, c)
	DNSQuery("NOERROR")
	GreylistDecision("greylisted")
	if d := value(t, c) - before; d != 0 {
		t.Errorf("DNSQuery recorded %v while disabled", d)
	}
	enabled(t)
	DNSQuery("NOERROR")
	if d := value(t, c) - before; d != 1 {
		t.Errorf("DNSQuery recorded %v while enabled, want 1", d)
	}
}

func TestRecordingFunctions(t *testing.T) {
	enabled(t)
	ScannerUp("clamd", "unix:/run/clamav/clamd.ctl", true)
	if v := value(t, scannerUp.WithLabelValues("clamd", "unix:/run/clamav/clamd.ctl")); v != 1 {
		t.Errorf("scanner up = %v, want 1", v)
	}
	ScannerUp("clamd", "unix:/run/clamav/clamd.ctl", false)
	if v := value(t, scannerUp.WithLabelValues("clamd", "unix:/run/clamav/clamd.ctl")); v != 0 {
		t.Errorf("scanner down = %v, want 0", v)
	}
	for _, tc := range []struct {
		name string
		do   func()
		c    prometheus.Collector
	}{
		{"scanner error", func() { ScannerError("spamd", "timeout") }, scannerErrors.WithLabelValues("spamd", "timeout")},
		{"greylist", func() { GreylistDecision("passed") }, greylistDecisions.WithLabelValues("passed")},
		{"dns cache", DNSCacheHit, dnsCacheHits},
		{"dnsbl", func() { DNSBLListed("bl.example") }, dnsblListed.WithLabelValues("bl.example")},
		{"milter", MilterProtocolError, milterProtocolErrors},
		{"panic", Panic, panics},
		{"reload ok", func() { ConfigReload(true) }, configReloads.WithLabelValues("success")},
		{"reload failed", func() { ConfigReload(false) }, configReloads.WithLabelValues("failure")},
	} {
		before := value(t, tc.c)
		tc.do()
		if d := value(t, tc.c) - before; d != 1 {
			t.Errorf("%s: moved by %v, want 1", tc.name, d)
		}
	}
}

// TestLint runs the client library's linter (the checks of `promtool check metrics`) over everything moat
// exports, with every labelled metric present.
func TestLint(t *testing.T) {
	enabled(t)
	DNSQuery("NOERROR")
	DNSBLListed("bl.example")
	GreylistDecision("known")
	ScannerUp("spamd", "tcp:127.0.0.1:783", true)
	ScannerError("spamd", "unavailable")
	Observer.CheckDone("spf", "mail", 3*time.Millisecond, []string{"pass"})
	Observer.MessageDone("accept", "", []string{"accept"})
	reg := NewRegistry(func() int64 { return 3 })
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"moat_messages_total", "moat_recipients_total", "moat_check_duration_seconds",
		"moat_check_results_total", "moat_scanner_up", "moat_scanner_errors_total", "moat_greylist_decisions_total",
		"moat_dns_queries_total", "moat_dns_cache_hits_total", "moat_dnsbl_listed_total", "moat_sessions_active",
		"moat_milter_protocol_errors_total", "moat_panics_total", "moat_config_reloads_total", "moat_build_info",
		"go_goroutines", "process_resident_memory_bytes"} {
		if !names[n] {
			t.Errorf("%s is not exported", n)
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`# HELP moat_sessions_active MTA connections (SMTP sessions) being served.
# TYPE moat_sessions_active gauge
moat_sessions_active 3
`), "moat_sessions_active"); err != nil {
		t.Error(err)
	}
}

// TestBuckets: the histogram spans half a millisecond to a minute, in increasing order.
func TestBuckets(t *testing.T) {
	if DurationBuckets[0] != 0.0005 || DurationBuckets[len(DurationBuckets)-1] != 60 {
		t.Errorf("buckets %v: want 0.0005 … 60", DurationBuckets)
	}
	for i := 1; i < len(DurationBuckets); i++ {
		if DurationBuckets[i] <= DurationBuckets[i-1] {
			t.Fatalf("buckets not increasing at %d: %v", i, DurationBuckets)
		}
	}
}
