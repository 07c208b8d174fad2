package dnsbl_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/dnsbl"
)

func engine(t *testing.T, srv *dnstest.Server, checkToml string, logs *bytes.Buffer) *policy.Engine {
	t.Helper()
	f := policytest.Parse(t, srv.Table("200ms")+policytest.Policy+"stage_timeout = \"2s\"\n"+checkToml)
	var lg *slog.Logger
	if logs != nil {
		lg = slog.New(slog.NewTextHandler(logs, nil))
	}
	e, err := policy.Build(f, lg, policytest.Services())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type session struct {
	ip, helo, from string
	auth           bool
}

// run plays one SMTP transaction up to RCPT and returns the RCPT decision and the session.
func run(t *testing.T, e *policy.Engine, ss session) (policy.Decision, *policy.Session) {
	t.Helper()
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr(ss.ip)
	s.Helo = ss.helo
	if ss.auth {
		s.Auth.Authen = "alice"
	}
	if d := e.Connect(ctx, s); d.Action != policy.ActContinue {
		t.Fatalf("connect: %+v", d)
	}
	if d := e.Helo(ctx, s); d.Action != policy.ActContinue {
		t.Fatalf("helo: %+v", d)
	}
	if d := e.Mail(ctx, s, ss.from, ""); d.Action != policy.ActContinue {
		t.Fatalf("mail: %+v", d)
	}
	_, d := e.Rcpt(ctx, s, "bob@dest.test", "")
	return d, s
}

const lists = `
[checks.dnsbl]
threshold = 3
[[checks.dnsbl.lists]]
zone = "zen.test=127.0.0.[2..11]*3"
reply_text = "listed by zen.test, see https://zen.test/{ip}"
[[checks.dnsbl.lists]]
zone = "quiet.test"
weight = 3
[[checks.dnsbl.lists]]
zone = "wl.test=127.0.[0..255].[1;2;3]*-5"
[[checks.dnsbl.lists]]
zone = "dbl.test"
weight = 3
type = "sender"
reply_text = "sender domain listed by dbl.test"
[[checks.dnsbl.lists]]
zone = "hbl.test"
weight = 1
type = "helo"
`

func TestDNSBL(t *testing.T) {
	srv := dnstest.Start(t,
		"2.2.0.192.zen.test. A 127.0.0.2",       // 192.0.2.2 on zen
		"3.2.0.192.zen.test. A 127.0.0.12",      // answer outside the filter
		"4.2.0.192.quiet.test. A 127.0.0.2",     // on the list without reply_text
		"5.2.0.192.zen.test. A 127.255.255.254", // list error
		"6.2.0.192.zen.test. A 127.0.0.4",
		"6.2.0.192.wl.test. A 127.0.10.2", // listed and allow-listed
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.test. A 127.0.0.3", // 2001:db8::1
		"spam.test.dbl.test. A 127.0.1.2",
		"bad.helo.test.hbl.test. A 127.0.0.2",
		"8.2.0.192.quiet.test. A 127.0.0.2",
	)
	srv.Set("7.2.0.192.zen.test", dnstest.Timeout)
	srv.Set("7.2.0.192.quiet.test", dnstest.Timeout)
	var logs bytes.Buffer
	e := engine(t, srv, lists, &logs)
	tests := []struct {
		name     string
		sess     session
		want     policy.Action
		wantText string
		notText  string
		allow    string
	}{
		{"listed with reply text", session{ip: "192.0.2.2", helo: "h.test", from: "a@ok.test"}, policy.ActReject,
			"554 5.7.1 Service unavailable; client [192.0.2.2] blocked: listed by zen.test, see https://zen.test/192.0.2.2", "", ""},
		{"answer outside the filter", session{ip: "192.0.2.3", helo: "h.test", from: "a@ok.test"}, policy.ActContinue, "", "", ""},
		{"list without reply text stays unnamed", session{ip: "192.0.2.4", helo: "h.test", from: "a@ok.test"}, policy.ActReject,
			"554 5.7.1 Service unavailable; client [192.0.2.4] is on a DNS block list", "quiet.test", ""},
		{"error code is not a listing", session{ip: "192.0.2.5", helo: "h.test", from: "a@ok.test"}, policy.ActContinue, "", "", ""},
		{"allow list outweighs", session{ip: "192.0.2.6", helo: "h.test", from: "a@ok.test"}, policy.ActContinue, "", "", "yes"},
		{"IPv6 nibbles", session{ip: "2001:db8::1", helo: "h.test", from: "a@ok.test"}, policy.ActReject, "blocked: listed by zen.test", "", ""},
		{"timeout never rejects", session{ip: "192.0.2.7", helo: "h.test", from: "a@ok.test"}, policy.ActContinue, "", "", ""},
		{"sender RHSBL", session{ip: "192.0.2.99", helo: "h.test", from: "a@spam.test"}, policy.ActReject, "sender domain listed by dbl.test", "", ""},
		{"HELO RHSBL below threshold", session{ip: "192.0.2.99", helo: "bad.helo.test", from: "a@ok.test"}, policy.ActContinue, "", "", ""},
		{"HELO and IP add up", session{ip: "192.0.2.3", helo: "bad.helo.test", from: "a@spam.test"}, policy.ActReject, "dbl.test", "", ""},
		{"authenticated client not refused", session{ip: "192.0.2.2", helo: "h.test", from: "a@ok.test", auth: true}, policy.ActContinue, "", "", ""},
		{"clean client", session{ip: "192.0.2.99", helo: "h.test", from: "a@ok.test"}, policy.ActContinue, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, s := run(t, e, tc.sess)
			if d.Action != tc.want {
				t.Fatalf("action = %v (%s), want %v; findings %+v", d.Action, d.Reply, tc.want, s.Findings())
			}
			got := d.Reply.String()
			if tc.wantText != "" && !strings.Contains(got, tc.wantText) {
				t.Errorf("reply = %q, want it to contain %q", got, tc.wantText)
			}
			if tc.notText != "" && strings.Contains(got, tc.notText) {
				t.Errorf("reply = %q names %q", got, tc.notText)
			}
			if got := s.Get(policy.FactDNSWL); got != tc.allow {
				t.Errorf("dnsbl/allow = %q, want %q", got, tc.allow)
			}
		})
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "127.255.255.254") {
		t.Errorf("list error code not logged as an error; log:\n%s", logs.String())
	}
}

func TestListsQueriedInParallel(t *testing.T) {
	srv := dnstest.Start(t)
	toml := "[checks.dnsbl]\ntimeout = \"10s\"\n"
	for i := 0; i < 5; i++ {
		zone := fmt.Sprintf("l%d.test", i)
		srv.Delay("9.2.0.192."+zone, 150*time.Millisecond)
		srv.MustAdd(t, "9.2.0.192."+zone+". A 127.0.0.2")
		toml += fmt.Sprintf("[[checks.dnsbl.lists]]\nzone = %q\nweight = 0.1\n", zone)
	}
	e := engine(t, srv, toml, nil)
	d, s := run(t, e, session{ip: "192.0.2.9", helo: "h.test", from: "a@ok.test"})
	if d.Action != policy.ActContinue {
		t.Fatalf("0.5 < threshold 1 should pass, got %+v", d)
	}
	f, ok := s.Finding("dnsbl", nil)
	if !ok || !strings.Contains(f.Detail, "total weight 0.5") {
		t.Fatalf("finding = %+v", f)
	}
	// Each answer is held back 150 ms: had the lists been asked one after the other, the server would never
	// have had two questions at once. No clock is read, so a slow machine cannot fail this.
	if peak := srv.PeakInFlight(); peak < 2 {
		t.Errorf("at most %d question(s) in flight at the server, want at least 2 (lists asked in parallel)", peak)
	}
	for i := 0; i < 5; i++ {
		if n := srv.Count(fmt.Sprintf("9.2.0.192.l%d.test", i), 1); n != 1 {
			t.Errorf("list %d asked %d times", i, n)
		}
	}
}

func TestSetupErrors(t *testing.T) {
	srv := dnstest.Start(t)
	tests := []struct{ name, toml, want string }{
		{"no lists", "[checks.dnsbl]\nthreshold = 2\n", "checks.dnsbl.lists: no lists"},
		{"bad filter", "[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"z.test=127.0.0.[9..2]\"\n", "moat.toml:10: checks.dnsbl.lists[0].zone: range"},
		{"bad type", "[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"z.test\"\ntype = \"mx\"\n", "checks.dnsbl.lists[0].type"},
		{"two weights", "[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"z.test*2\"\nweight = 3\n", "already has a weight"},
		{"unknown key", "[checks.dnsbl]\nthreshhold = 3\n", "unknown key"},
		{"NaN weight in zone", "[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"z.test*NaN\"\n", "moat.toml:9: checks.dnsbl.lists[0].weight: must be a finite number"},
		{"Inf weight in zone", "[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"z.test*-Inf\"\n", "checks.dnsbl.lists[0].weight: must be a finite number"},
		{"nan weight key", "[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"z.test\"\nweight = nan\n", "checks.dnsbl.lists[0].weight: must be a finite number"},
		{"inf threshold", "[checks.dnsbl]\nthreshold = inf\n[[checks.dnsbl.lists]]\nzone = \"z.test\"\n", "moat.toml:9: checks.dnsbl.threshold: must be a finite number"},
		{"nan score_factor", "[checks.dnsbl]\nscore_factor = nan\n[[checks.dnsbl.lists]]\nzone = \"z.test\"\n", "moat.toml:9: checks.dnsbl.score_factor: must be a finite number"},
		{"bad reply_enhanced", "[checks.dnsbl]\nreply_enhanced = \"5.7\"\n[[checks.dnsbl.lists]]\nzone = \"z.test\"\n", "moat.toml:9: checks.dnsbl.reply_enhanced"},
		{"4xx reply_enhanced", "[checks.dnsbl]\nreply_enhanced = \"4.7.1\"\n[[checks.dnsbl.lists]]\nzone = \"z.test\"\n", "checks.dnsbl.reply_enhanced"},
		{"bad reply_code", "[checks.dnsbl]\nreply_code = 450\n[[checks.dnsbl.lists]]\nzone = \"z.test\"\n", "moat.toml:9: checks.dnsbl.reply_code"},
		{"duplicate zone", "[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"z.test\"\n[[checks.dnsbl.lists]]\nzone = \"Z.test.*2\"\n", "checks.dnsbl.lists[1].zone: zone \"z.test\" already configured in lists[0]"},
		{"duplicate zone overlapping filters", "[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"z.test=127.0.0.[2..4]\"\n[[checks.dnsbl.lists]]\nzone = \"z.test=127.0.0.4*2\"\n", "already configured in lists[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := policytest.BuildError(t, srv.Table("200ms")+policytest.Policy+"stage_timeout = \"2s\"\n"+tc.toml)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestIPQuery(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"192.0.2.1", "1.2.0.192"},
		{"::ffff:192.0.2.1", "1.2.0.192"},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"},
	}
	for _, tc := range tests {
		if got := dnsbl.IPQuery(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("IPQuery(%s) = %s, want %s", tc.ip, got, tc.want)
		}
	}
}

// TestSameZoneDisjointFilters: one zone with different weights for different codes is fine (postscreen style).
func TestSameZoneDisjointFilters(t *testing.T) {
	srv := dnstest.Start(t)
	err := policytest.BuildError(t, srv.Table("200ms")+policytest.Policy+"stage_timeout = \"2s\"\n"+
		"[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"z.test=127.0.0.[2..3]*3\"\n[[checks.dnsbl.lists]]\nzone = \"z.test=127.0.0.[10;11]*-2\"\n"+
		"[[checks.dnsbl.lists]]\nzone = \"z.test\"\ntype = \"sender\"\n")
	if err != nil {
		t.Fatal(err)
	}
}

// TestAllowListErrorTempfails: when an allow list could not be asked and the block lists reach the
// threshold, the client gets 451 4.7.1, not a refusal: the allow list might have saved it.
func TestAllowListErrorTempfails(t *testing.T) {
	srv := dnstest.Start(t,
		"2.2.0.192.zen.test. A 127.0.0.2",
		"3.2.0.192.zen.test. A 127.0.0.2",
		"3.2.0.192.wl.test. A 127.0.10.2",
		"4.2.0.192.zen.test. A 127.0.0.2",
		"spam.test.dbl.test. A 127.0.1.2",
		"spam2.test.dbl.test. A 127.0.1.2",
	)
	srv.Set("2.2.0.192.wl.test", dnstest.Timeout)
	srv.Set("spam2.test.dwl.test", dnstest.ServFail)
	srv.Set("4.2.0.192.wl.test", dnstest.ServFail)
	srv.Set("5.2.0.192.wl.test", dnstest.Timeout)
	srv.Set("ok.test.dwl.test", dnstest.ServFail)
	e := engine(t, srv, `
[checks.dnsbl]
threshold = 3
[[checks.dnsbl.lists]]
zone = "zen.test*3"
[[checks.dnsbl.lists]]
zone = "wl.test*-5"
[[checks.dnsbl.lists]]
zone = "dbl.test*3"
type = "sender"
[[checks.dnsbl.lists]]
zone = "dwl.test*-5"
type = "sender"
`, nil)
	for _, tc := range []struct {
		name  string
		sess  session
		want  policy.Action
		reply string
	}{
		{"allow list timed out", session{ip: "192.0.2.2", helo: "h.test", from: "a@ok.test"}, policy.ActTempfail, "451 4.7.1 "},
		{"allow list SERVFAIL", session{ip: "192.0.2.4", helo: "h.test", from: "a@ok.test"}, policy.ActTempfail, "451 4.7.1 "},
		{"allow list answered", session{ip: "192.0.2.3", helo: "h.test", from: "a@ok.test"}, policy.ActContinue, ""},
		{"allow list down, not listed", session{ip: "192.0.2.5", helo: "h.test", from: "a@ok.test"}, policy.ActContinue, ""},
		{"sender allow list answered, sender listed", session{ip: "192.0.2.9", helo: "h.test", from: "a@spam.test"}, policy.ActReject, "554 5.7.1"},
		{"sender allow list down, sender listed", session{ip: "192.0.2.9", helo: "h.test", from: "a@spam2.test"}, policy.ActTempfail, "451 4.7.1 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, s := run(t, e, tc.sess)
			if d.Action != tc.want || !strings.HasPrefix(d.Reply.String(), tc.reply) {
				t.Fatalf("action %v reply %q, want %v %q; findings %+v", d.Action, d.Reply, tc.want, tc.reply, s.Findings())
			}
		})
	}
}

// TestAnswerOutside127: without a filter, only answers in 127/8 are listings (RFC 5782 section 2.1); others
// are list errors, logged at most once per list and interval.
func TestAnswerOutside127(t *testing.T) {
	srv := dnstest.Start(t,
		"2.2.0.192.wild.test. A 192.0.2.250",
		"3.2.0.192.wild.test. A 127.0.0.2",
		"4.2.0.192.wild.test. A 127.255.255.254",
	)
	var logs bytes.Buffer
	e := engine(t, srv, "[checks.dnsbl]\n[[checks.dnsbl.lists]]\nzone = \"wild.test\"\n", &logs)
	d, s := run(t, e, session{ip: "192.0.2.2", helo: "h.test", from: "a@ok.test"})
	if d.Action != policy.ActContinue {
		t.Fatalf("an answer outside 127/8 was counted: %v %s", d.Action, d.Reply)
	}
	noted := false
	for _, f := range s.Findings() {
		if f.Check == "dnsbl" && strings.Contains(f.Detail, "192.0.2.250 outside 127.0.0.0/8") {
			noted = f.Status != "listed"
		}
	}
	if !noted {
		t.Errorf("no finding notes the answer outside 127/8 as an error; findings %+v", s.Findings())
	}
	if !strings.Contains(logs.String(), "outside 127.0.0.0/8") || !strings.Contains(logs.String(), "192.0.2.250") {
		t.Errorf("answer outside 127/8 not logged; log:\n%s", logs.String())
	}
	if d, _ := run(t, e, session{ip: "192.0.2.3", helo: "h.test", from: "a@ok.test"}); d.Action != policy.ActReject {
		t.Errorf("127.0.0.2 answer: %v, want reject", d.Action)
	}
	// Many connections with error answers: one log line per list within the interval.
	for i := 0; i < 5; i++ {
		run(t, e, session{ip: "192.0.2.2", helo: "h.test", from: "a@ok.test"})
		run(t, e, session{ip: "192.0.2.4", helo: "h.test", from: "a@ok.test"})
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d error lines for one list within the interval, want 1; log:\n%s", n, logs.String())
	}
}

// TestUnicodeDomainsAskedAsALabels: the sender and HELO lists are asked about A-labels.
func TestUnicodeDomainsAskedAsALabels(t *testing.T) {
	srv := dnstest.Start(t,
		"xn--bcher-kva.test.dbl.test. A 127.0.1.2",
		"xn--mnchen-3ya.test.hbl.test. A 127.0.0.2",
	)
	e := engine(t, srv, `
[checks.dnsbl]
threshold = 3
[[checks.dnsbl.lists]]
zone = "dbl.test*3"
type = "sender"
[[checks.dnsbl.lists]]
zone = "hbl.test*1"
type = "helo"
`, nil)
	d, s := run(t, e, session{ip: "192.0.2.9", helo: "münchen.test", from: "a@Bücher.test"})
	if d.Action != policy.ActReject {
		t.Fatalf("U-label sender on the list: %v, want reject; findings %+v", d.Action, s.Findings())
	}
	if f, _ := s.Finding("dnsbl", nil); !strings.Contains(f.Detail, "total weight 4") {
		t.Errorf("finding %+v, want HELO and sender weights (4)", f)
	}
}
