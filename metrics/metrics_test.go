package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// enabled turns recording on for one test (the collectors are package-wide: tests compare deltas).
func enabled(t *testing.T) {
	t.Helper()
	Enable("test")
	t.Cleanup(Disable)
}

func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
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
