// Package metrics implements moat's Prometheus metrics and its health endpoint.
//
// The engine tells it what happens through policy.Observer, which [Observer] implements (messages,
// recipients, check runs, panics); the shared services and checks call the small functions below (DNSQuery,
// GreylistDecision, ScannerUp, …), so that neither imports the Prometheus client. The package imports
// nothing of moat's, so that services below policy (the resolver) may report to it. Recording is off until Enable: a daemon without a [metrics]
// table pays one atomic load per event.
//
// # Names
//
// The names follow Prometheus' conventions (base units, _total for counters) and the habits of the
// exporters mail administrators already run (postfix_exporter, rspamd, mox): one moat_ prefix, an action and
// a reason per message. No label carries a sender, a recipient or a domain (unbounded cardinality); DNSBL
// zones come from the configuration only, and reasons and results are the checks' fixed words.
package metrics

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// DurationBuckets are the upper bounds of moat_check_duration_seconds: from half a millisecond (a list
// lookup) to a minute (a scanner on a large message).
var DurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

var on atomic.Bool

var (
	quarantineMessages = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "moat_quarantine_messages",
		Help: "Messages in moat's quarantine with at least one recipient still held.",
	})
	quarantineBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "moat_quarantine_bytes",
		Help: "Bytes of the messages stored in moat's quarantine.",
	})
	messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_messages_total",
		Help: "Messages ended, by moat's answer and the check/reason that decided it (none when no check did).",
	}, []string{"action", "reason"})
	recipients = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_recipients_total",
		Help: "Recipients of ended messages, by the answer they got: their own refusal at RCPT, else the message's.",
	}, []string{"action"})
	checkDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "moat_check_duration_seconds",
		Help:    "Time one run of a check took, by check and SMTP stage.",
		Buckets: DurationBuckets,
	}, []string{"check", "stage"})
	checkResults = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_check_results_total",
		Help: "Findings returned by the checks, by check and result (pass, fail, temperror, listed, …).",
	}, []string{"check", "result"})
	scannerUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "moat_scanner_up",
		Help: "1 when the content scanner server answers, 0 while it is marked down.",
	}, []string{"scanner", "server"})
	scannerErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_scanner_errors_total",
		Help: "Failed attempts to scan on one server, by scanner and kind (unavailable, timeout, error).",
	}, []string{"scanner", "kind"})
	greylistDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_greylist_decisions_total",
		Help: "Greylisting decisions per recipient (greylisted, passed, known, auto-whitelisted, store-error, skipped).",
	}, []string{"decision"})
	dnsQueries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_dns_queries_total",
		Help: "DNS queries sent to the configured servers, by response code (NOERROR, NXDOMAIN, SERVFAIL, …, timeout, error).",
	}, []string{"rcode"})
	dnsCacheHits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "moat_dns_cache_hits_total",
		Help: "DNS lookups of the checks answered from moat's cache.",
	})
	dnsblListed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_dnsbl_listed_total",
		Help: "Lookups a configured DNSBL, DNSWL or RHSBL zone answered with a listing that counts.",
	}, []string{"zone"})
	milterProtocolErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "moat_milter_protocol_errors_total",
		Help: "MTA connections closed because of a malformed milter packet.",
	})
	panics = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "moat_panics_total",
		Help: "Panics in checks or in message handling, each turned into a tempfail for its message.",
	})
	configReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_config_reloads_total",
		Help: "Configuration reloads (SIGHUP), by result (success, failure).",
	}, []string{"result"})
	buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "moat_build_info",
		Help: "Always 1; the labels name the running build.",
	}, []string{"version", "goversion"})
)

// Enable turns recording on, with version as moat_build_info's. serve calls it, and hands Observer to the
// engine, before it builds the engine, so that the checks' set-up (scanner servers) is recorded too.
func Enable(version string) {
	on.Store(true)
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	for _, r := range []string{"success", "failure"} {
		configReloads.WithLabelValues(r)
	}
}

// Disable turns recording off (for tests and benchmarks that compare both).
func Disable() { on.Store(false) }

// Observer is the engine's observer (policy.Observer): it records messages, recipients, check runs and
// panics while recording is on.
var Observer observer

// Enabled reports whether recording is on.
func Enabled() bool { return on.Load() }

// NewRegistry returns a registry with every moat metric and the Go and process collectors; sessions, when
// not nil, reports moat_sessions_active.
func NewRegistry(sessions func() int64) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(messages, recipients, checkDuration, checkResults, scannerUp, scannerErrors,
		greylistDecisions, dnsQueries, dnsCacheHits, dnsblListed, milterProtocolErrors, panics, configReloads,
		buildInfo, quarantineMessages, quarantineBytes, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if sessions != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "moat_sessions_active",
			Help: "MTA connections (SMTP sessions) being served.",
		}, func() float64 { return float64(sessions()) }))
	}
	return reg
}

// DNSQuery counts one query sent to a DNS server, by its response code ("NOERROR", "SERVFAIL"…) or
// "timeout" / "error" when no answer came.
func DNSQuery(rcode string) {
	if on.Load() {
		dnsQueries.WithLabelValues(rcode).Inc()
	}
}

// DNSCacheHit counts one lookup answered from the resolver's cache.
func DNSCacheHit() {
	if on.Load() {
		dnsCacheHits.Inc()
	}
}

// DNSBLListed counts one listing by zone, a zone of the configuration.
func DNSBLListed(zone string) {
	if on.Load() {
		dnsblListed.WithLabelValues(zone).Inc()
	}
}

// GreylistDecision counts one greylisting decision for a recipient.
func GreylistDecision(decision string) {
	if on.Load() {
		greylistDecisions.WithLabelValues(decision).Inc()
	}
}

// QuarantineSize sets the quarantine's gauges: messages with a recipient held, and bytes stored.
func QuarantineSize(held int, bytes int64) {
	if !on.Load() {
		return
	}
	quarantineMessages.Set(float64(held))
	quarantineBytes.Set(float64(bytes))
}

// ScannerUp records whether a scanner server ("clamd", "unix:/run/clamav/clamd.ctl") is up.
func ScannerUp(scanner, server string, up bool) {
	if !on.Load() {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	scannerUp.WithLabelValues(scanner, server).Set(v)
}

// ScannerError counts one failed scan attempt of kind "unavailable", "timeout" or "error".
func ScannerError(scanner, kind string) {
	if on.Load() {
		scannerErrors.WithLabelValues(scanner, kind).Inc()
	}
}

// MilterProtocolError counts one connection closed for a malformed milter packet.
func MilterProtocolError() {
	if on.Load() {
		milterProtocolErrors.Inc()
	}
}

// Panic counts one panic turned into a tempfail outside the engine (the milter session).
func Panic() {
	if on.Load() {
		panics.Inc()
	}
}

// ConfigReload counts one reload, successful or not.
func ConfigReload(ok bool) {
	if !on.Load() {
		return
	}
	r := "success"
	if !ok {
		r = "failure"
	}
	configReloads.WithLabelValues(r).Inc()
}

// observer is the engine's policy.Observer.
type observer struct{}

func (observer) CheckDone(check, stage string, elapsed time.Duration, results []string) {
	if !on.Load() {
		return
	}
	checkDuration.WithLabelValues(check, stage).Observe(elapsed.Seconds())
	for _, r := range results {
		checkResults.WithLabelValues(check, r).Inc()
	}
}

func (observer) MessageDone(action, reason string, rcptActions []string) {
	if !on.Load() {
		return
	}
	if reason == "" {
		reason = "none"
	}
	messages.WithLabelValues(action, reason).Inc()
	for _, a := range rcptActions {
		recipients.WithLabelValues(a).Inc()
	}
}

func (observer) Panicked() { Panic() }
