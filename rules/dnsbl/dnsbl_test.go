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
	e, err := policy.Build(f, lg)
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
			if got := s.Get(dnsbl.FactAllow); got != tc.allow {
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
	toml := "[checks.dnsbl]\ntimeout = \"450ms\"\n"
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
	// Five lists each delayed 150 ms all answered within the check's 450 ms deadline: a serial walk
	// would need 750 ms, so they were asked side by side.
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
