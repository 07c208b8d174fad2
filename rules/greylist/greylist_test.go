package greylist

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/store"
)

// fakeClock is the injected clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

var start = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

func newStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "moat.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newCheck(t *testing.T, mod func(*Config)) (*Check, *fakeClock, store.Store) {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	clk := &fakeClock{now: start}
	st := newStore(t)
	return New(cfg, st, nil, clk.Now), clk, st
}

type sess struct {
	ip, helo, from string
	facts          map[string]string
	auth           string
}

func session(t *testing.T, sv sess) *policy.Session {
	t.Helper()
	s := policy.NewSession()
	if sv.ip != "" {
		s.ClientIP = netip.MustParseAddr(sv.ip)
	}
	s.Helo = sv.helo
	s.Auth.Authen = sv.auth
	from, err := addr.Parse(sv.from)
	if err != nil {
		t.Fatal(err)
	}
	s.From = from
	for k, v := range sv.facts {
		s.Set(k, v)
	}
	return s
}

// rcpt runs the check for one recipient the way the engine does and returns its one finding.
func rcpt(t *testing.T, c *Check, s *policy.Session, to string) policy.Finding {
	t.Helper()
	addr, err := addr.Parse(to)
	if err != nil {
		t.Fatal(err)
	}
	r := &policy.Recipient{Addr: addr}
	s.Rcpts = append(s.Rcpts, r)
	fs := c.Rcpt(context.Background(), s, r)
	if len(fs) != 1 {
		t.Fatalf("%d findings, want 1: %+v", len(fs), fs)
	}
	f := fs[0]
	f.Check = Name
	r.Findings = append(r.Findings, f)
	if f.Verdict == policy.Tempfail {
		r.Decision = policy.Analyze(policy.Input{Stage: policy.StageRcpt, Findings: []policy.Finding{f}}, policy.Params{})
	}
	return f
}

var alice = sess{ip: "192.0.2.10", helo: "mx.example.com", from: "alice@example.com"}

func wantGreylisted(t *testing.T, f policy.Finding, secs int) {
	t.Helper()
	want := fmt.Sprintf("451 4.7.1 Greylisted, please try again in %d seconds", secs)
	if f.Verdict != policy.Tempfail || f.Reply.String() != want || f.Status != StatusGreylisted {
		t.Fatalf("finding %+v (reply %q), want tempfail %q", f, f.Reply.String(), want)
	}
}

func wantPass(t *testing.T, f policy.Finding, reason string) {
	t.Helper()
	if f.Verdict != policy.None || f.Status != policy.StatusPass || f.Reason != reason {
		t.Fatalf("finding %+v, want pass/%s", f, reason)
	}
}

func TestDelayWindowExpiry(t *testing.T) {
	c, clk, _ := newCheck(t, func(cfg *Config) { cfg.AutoWhitelist = 0 })
	wantGreylisted(t, rcpt(t, c, session(t, alice), "bob@example.org"), 300)
	clk.Advance(100 * time.Second)
	wantGreylisted(t, rcpt(t, c, session(t, alice), "bob@example.org"), 200)
	clk.Advance(200 * time.Second)
	f := rcpt(t, c, session(t, alice), "bob@example.org")
	wantPass(t, f, ReasonPassed)
	want := " delayed 300 seconds by moat-" + policy.Version + "; Mon, 04 May 2026 10:05:00 +0000"
	if len(f.AddHeaders) != 1 || f.AddHeaders[0].Name != "X-Greylist" || f.AddHeaders[0].Value != want {
		t.Fatalf("headers %+v, want X-Greylist:%s", f.AddHeaders, want)
	}
	clk.Advance(24 * time.Hour)
	f = rcpt(t, c, session(t, alice), "bob@example.org")
	wantPass(t, f, ReasonKnown)
	if len(f.AddHeaders) != 0 {
		t.Fatalf("a known triplet got headers %+v", f.AddHeaders)
	}
	// Another address of the same /24 is the same client.
	wantPass(t, rcpt(t, c, session(t, sess{ip: "192.0.2.200", helo: "mx2.example.com", from: "alice@example.com"}), "bob@example.org"), ReasonKnown)
	// A retry after the window starts over.
	wantGreylisted(t, rcpt(t, c, session(t, alice), "carol@example.org"), 300)
	clk.Advance(48*time.Hour + time.Second)
	wantGreylisted(t, rcpt(t, c, session(t, alice), "carol@example.org"), 300)
	// Passed triplets expire after 35 days without traffic.
	clk.Advance(35*24*time.Hour + time.Second)
	wantGreylisted(t, rcpt(t, c, session(t, alice), "bob@example.org"), 300)
}

func TestAutoWhitelist(t *testing.T) {
	c, clk, _ := newCheck(t, func(cfg *Config) { cfg.AutoWhitelist = 5 })
	for i := 0; i < 5; i++ {
		to := fmt.Sprintf("user%d@example.org", i)
		wantGreylisted(t, rcpt(t, c, session(t, alice), to), 300)
		clk.Advance(10 * time.Minute)
		wantPass(t, rcpt(t, c, session(t, alice), to), ReasonPassed)
		// A second pass in the same hour does not count (after the fifth pass the client is white-listed).
		if i < 4 {
			wantPass(t, rcpt(t, c, session(t, alice), to), ReasonKnown)
		} else {
			wantPass(t, rcpt(t, c, session(t, alice), to), ReasonWhitelisted)
		}
		clk.Advance(time.Hour)
	}
	f := rcpt(t, c, session(t, sess{ip: "192.0.2.99", helo: "x", from: "someone@else.example"}), "new@example.org")
	wantPass(t, f, ReasonWhitelisted)
	if !strings.Contains(f.Detail, "client-passes=5") {
		t.Fatalf("detail %q", f.Detail)
	}
	clk.Advance(36 * 24 * time.Hour)
	wantGreylisted(t, rcpt(t, c, session(t, alice), "new@example.org"), 300)
}

func TestAutoWhitelistCountsOncePerHour(t *testing.T) {
	c, clk, _ := newCheck(t, func(cfg *Config) { cfg.AutoWhitelist = 2 })
	for i := 0; i < 4; i++ { // four passes within one hour count once
		to := fmt.Sprintf("u%d@example.org", i)
		wantGreylisted(t, rcpt(t, c, session(t, alice), to), 300)
		clk.Advance(5 * time.Minute)
		wantPass(t, rcpt(t, c, session(t, alice), to), ReasonPassed)
	}
	wantGreylisted(t, rcpt(t, c, session(t, alice), "other@example.org"), 300)
}

func TestSPFGrouping(t *testing.T) {
	c, clk, _ := newCheck(t, nil)
	spf := map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: "bigmail.example"}
	first := sess{ip: "198.51.100.1", helo: "out1.bigmail.example", from: "alice@bigmail.example", facts: spf}
	wantGreylisted(t, rcpt(t, c, session(t, first), "bob@example.org"), 300)
	clk.Advance(6 * time.Minute)
	// The retry comes from a different network of the provider's pool: it passes.
	retry := sess{ip: "203.0.113.77", helo: "out9.bigmail.example", from: "alice@bigmail.example", facts: spf}
	wantPass(t, rcpt(t, c, session(t, retry), "bob@example.org"), ReasonPassed)
	// Without SPF pass, the same retry would be a new triplet.
	noSPF := retry
	noSPF.facts = map[string]string{policy.FactSPFResult: "softfail", policy.FactSPFDomain: "bigmail.example"}
	wantGreylisted(t, rcpt(t, c, session(t, noSPF), "bob@example.org"), 300)
	// Grouping can be turned off.
	c2, _, _ := newCheck(t, func(cfg *Config) { cfg.GroupBySPF = false })
	wantGreylisted(t, rcpt(t, c2, session(t, first), "bob@example.org"), 300)
	clk.Advance(0)
	f := rcpt(t, c2, session(t, retry), "bob@example.org")
	if f.Verdict != policy.Tempfail || !strings.Contains(f.Detail, "client=203.0.113.0/24") {
		t.Fatalf("without grouping: %+v", f)
	}
}

func TestNormalisedSenderRetry(t *testing.T) {
	c, clk, _ := newCheck(t, nil)
	a := sess{ip: "192.0.2.10", helo: "mx.example.com", from: "prvs=4123a1b2c3=alice@example.com"}
	wantGreylisted(t, rcpt(t, c, session(t, a), "bob@example.org"), 300)
	clk.Advance(6 * time.Minute)
	a.from = "prvs=4124ffee01=Alice@Example.com" // new BATV tag on the retry
	wantPass(t, rcpt(t, c, session(t, a), "bob@example.org"), ReasonPassed)
}

func TestSkips(t *testing.T) {
	c, _, st := newCheck(t, func(cfg *Config) {
		off, on := false, true
		cfg.Domains = map[string]DomainConfig{"noGrey.example": {Enabled: &off}, "picky.example": {SuspiciousOnly: &on}}
	})
	good := map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: "example.com", policy.FactFCrDNS: "pass"}
	tests := []struct {
		name   string
		s      sess
		to     string
		reason string
	}{
		{"authenticated", sess{ip: "192.0.2.1", from: "a@example.com", auth: "alice"}, "b@example.org", ReasonAuthenticated},
		{"trusted network", sess{ip: "192.0.2.1", from: "a@example.com", facts: map[string]string{policy.FactTrustedNetwork: "yes"}}, "b@example.org", ReasonTrusted},
		{"dnswl", sess{ip: "192.0.2.1", from: "a@example.com", facts: map[string]string{policy.FactDNSWL: "yes"}}, "b@example.org", ReasonDNSWL},
		{"local submission", sess{from: "a@example.com"}, "b@example.org", ReasonLocal},
		{"domain off", sess{ip: "192.0.2.1", from: "a@example.com"}, "b@nogrey.example", ReasonDomainOff},
		{"subdomain off", sess{ip: "192.0.2.1", from: "a@example.com"}, "b@lists.nogrey.example", ReasonDomainOff},
		{"suspicious only, fcrdns+spf", sess{ip: "192.0.2.1", from: "a@example.com", facts: good}, "b@picky.example", ReasonNotSuspicious},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := rcpt(t, c, session(t, tc.s), tc.to)
			if f.Status != policy.StatusSkipped || f.Reason != tc.reason || f.Verdict != policy.None {
				t.Fatalf("finding %+v, want skipped/%s", f, tc.reason)
			}
		})
	}
	// Suspicious-only does not skip a client without FCrDNS, nor elsewhere than the picky domain.
	half := map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: "example.com", policy.FactFCrDNS: "fail"}
	wantGreylisted(t, rcpt(t, c, session(t, sess{ip: "192.0.2.1", from: "a@example.com", facts: half}), "b@picky.example"), 300)
	wantGreylisted(t, rcpt(t, c, session(t, sess{ip: "192.0.2.1", from: "a@example.com", facts: good}), "b@example.org"), 300)
	// Skipped recipients leave no record.
	n := 0
	st.GreyEntries(context.Background(), start, func(e store.GreyEntry) bool { n++; return true })
	if n != 2 {
		t.Fatalf("%d entries, want 2 (only the greylisted ones)", n)
	}
}

func TestRefusedRecipientNotRecorded(t *testing.T) {
	c, _, st := newCheck(t, nil)
	s := session(t, alice)
	addr, _ := addr.Parse("nobody@example.org")
	r := &policy.Recipient{Addr: addr, Findings: []policy.Finding{{Check: "recipients", Verdict: policy.Reject}}}
	s.Rcpts = append(s.Rcpts, r)
	fs := c.Rcpt(context.Background(), s, r)
	if len(fs) != 1 || fs[0].Reason != ReasonRefused {
		t.Fatalf("findings %+v", fs)
	}
	n := 0
	st.GreyEntries(context.Background(), start, func(store.GreyEntry) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d entries recorded for a refused recipient", n)
	}
}

// TestHeaderOncePerMessage: several recipients that pass after a delay in one message give one X-Greylist.
func TestHeaderOncePerMessage(t *testing.T) {
	c, clk, _ := newCheck(t, nil)
	s := session(t, alice)
	for _, to := range []string{"a@example.org", "b@example.org", "c@example.org"} {
		wantGreylisted(t, rcpt(t, c, s, to), 300)
	}
	clk.Advance(7 * time.Minute)
	s = session(t, alice)
	headers := 0
	for _, to := range []string{"a@example.org", "b@example.org", "c@example.org"} {
		f := rcpt(t, c, s, to)
		wantPass(t, f, ReasonPassed)
		headers += len(f.AddHeaders)
	}
	if headers != 1 {
		t.Fatalf("%d X-Greylist headers for one message, want 1", headers)
	}
}

func TestDryState(t *testing.T) {
	c, _, st := newCheck(t, nil)
	sv := alice
	s := session(t, sv)
	s.ReadOnly = true
	f := rcpt(t, c, s, "bob@example.org")
	wantGreylisted(t, f, 300)
	if !strings.Contains(f.Detail, "read-only") {
		t.Fatalf("detail %q", f.Detail)
	}
	n := 0
	st.GreyEntries(context.Background(), start, func(store.GreyEntry) bool { n++; return true })
	if n != 0 {
		t.Fatalf("a read-only decision wrote %d entries", n)
	}
}

func TestStoreFailure(t *testing.T) {
	for _, policyName := range []string{"accept", "tempfail"} {
		t.Run(policyName, func(t *testing.T) {
			c, _, st := newCheck(t, func(cfg *Config) { cfg.OnError = policyName })
			st.Close() // every operation now fails
			f := rcpt(t, c, session(t, alice), "bob@example.org")
			if f.Err == nil || f.Reason != ReasonStoreError || f.Status != policy.StatusTempError {
				t.Fatalf("finding %+v", f)
			}
			if policyName == "accept" && f.Verdict != policy.None {
				t.Fatalf("on_error=accept gave verdict %v", f.Verdict)
			}
			if policyName == "tempfail" && (f.Verdict != policy.Tempfail || f.Reply.Code != 451) {
				t.Fatalf("on_error=tempfail gave %+v", f)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	tests := []struct{ name, body, wantErr string }{
		{"defaults", "", ""},
		{"all keys", `delay = "2s"
window = "1h"
expiry = "10d"
ipv4_prefix = 32
ipv6_prefix = 48
group_by_spf_domain = false
auto_whitelist = 0
auto_whitelist_interval = "30m"
suspicious_only = true
text = "Come back in {seconds}s"
on_error = "tempfail"
header = false
[checks.greylist.domains."example.org"]
enabled = false
[checks.greylist.domains."example.net"]
delay = "1m"
`, ""},
		{"unknown key", "dealy = \"5m\"\n", "moat.toml:4: checks.greylist.dealy: unknown key"},
		{"zero delay", "delay = \"0s\"\n", "t.toml:4: checks.greylist.delay: must be positive"},
		{"window not after delay", "delay = \"1h\"\nwindow = \"30m\"\n", "checks.greylist.window: must be longer than delay"},
		{"bad prefix", "ipv4_prefix = 33\n", "checks.greylist.ipv4_prefix"},
		{"bad on_error", "on_error = \"drop\"\n", "checks.greylist.on_error"},
		{"newline in text", "text = \"a\\nb\"\n", "checks.greylist.text"},
		{"bad domain delay", "[checks.greylist.domains.\"x.example\"]\ndelay = \"3d\"\n", "checks.greylist.domains"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			toml := storeTable(t) + "[checks.greylist]\n" + tc.body
			if tc.wantErr == "" {
				if got := fmt.Sprint(policytest.Engine(t, toml).Checks()); got != "[greylist]" {
					t.Fatalf("checks %s", got)
				}
				return
			}
			err := policytest.BuildError(t, toml)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestEngine runs greylisting through the policy engine: the 451 reaches the recipient's decision, the retry
// after the delay is accepted with X-Greylist in the outcome, and a forged X-Greylist is removed.
func TestEngine(t *testing.T) {
	clk := &fakeClock{now: start}
	clock = clk.Now
	defer func() { clock = time.Now }()
	e := policytest.Engine(t, storeTable(t)+"[checks.greylist]\ndelay = \"2m\"\n")
	ctx := context.Background()
	attempt := func() (*policy.Session, policy.Decision) {
		s := policy.NewSession()
		s.ClientIP = netip.MustParseAddr("192.0.2.10")
		s.Helo = "mx.example.com"
		e.Connect(ctx, s)
		e.Helo(ctx, s)
		e.Mail(ctx, s, "alice@example.com", "")
		_, d := e.Rcpt(ctx, s, "bob@example.org", "")
		return s, d
	}
	_, d := attempt()
	if d.Action != policy.ActTempfail || d.Reply.Code != 451 || d.Reply.Enhanced != "4.7.1" ||
		!strings.HasPrefix(d.Reply.Text, "Greylisted, please try again in 120 seconds") {
		t.Fatalf("first attempt: %+v", d)
	}
	clk.Advance(3 * time.Minute)
	s, d := attempt()
	if d.Action == policy.ActTempfail || d.Action == policy.ActReject {
		t.Fatalf("retry: %+v", d)
	}
	s.Headers = []policy.Header{{Name: "X-Greylist", Value: " delayed 0 seconds by forger"}, {Name: "Subject", Value: " hi"}}
	e.Headers(ctx, s)
	out := e.EOM(ctx, s, msg("Subject: hi\r\n\r\nbody\r\n"))
	var got []string
	for _, h := range out.AddHeaders {
		if h.Name == "X-Greylist" {
			got = append(got, h.Value)
		}
	}
	if len(got) != 1 || !strings.HasPrefix(got[0], " delayed 180 seconds by moat-") {
		t.Fatalf("X-Greylist added: %q (all %+v)", got, out.AddHeaders)
	}
	if len(out.RemoveHeaders) != 1 || out.RemoveHeaders[0].Name != "X-Greylist" {
		t.Fatalf("forged header not removed: %+v", out.RemoveHeaders)
	}
}

type msg string

func (m msg) Open() io.Reader { return strings.NewReader(string(m)) }
func (m msg) Size() int64     { return int64(len(m)) }

// TestExampleConfig: the README's example.toml (with the store's) is a valid configuration.
func TestExampleConfig(t *testing.T) {
	var data []byte
	for _, p := range []string{"../../store/example.toml", "example.toml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data = append(append(data, b...), '\n')
	}
	t.Chdir(t.TempDir()) // the example's store is ./moat.db
	f, err := config.Parse("example.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.Build(f, nil, policytest.Services())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Retire()
	if fmt.Sprint(e.Checks()) != "[greylist]" {
		t.Fatalf("checks %v", e.Checks())
	}
	if _, err := os.Stat("moat.db"); err != nil {
		t.Fatalf("example store not created: %v", err)
	}
}

// storeTable is a [store] table with a database of the test's own.
func storeTable(t *testing.T) string {
	return fmt.Sprintf("[store]\npath = %q\n", filepath.Join(t.TempDir(), "grey.db"))
}
