package rdns

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

func engine(t *testing.T, srv *dnstest.Server, checkToml string) *policy.Engine {
	t.Helper()
	return policytest.Engine(t, srv.Table("200ms")+policytest.Policy+"[checks.rdns]\n"+checkToml)
}

func TestRDNS(t *testing.T) {
	srv := dnstest.Start(t,
		"1.2.0.192.in-addr.arpa. PTR mail.good.test.",
		"mail.good.test. A 192.0.2.1",
		"2.2.0.192.in-addr.arpa. PTR liar.test.",
		"liar.test. A 198.51.100.1",
		"5.2.0.192.in-addr.arpa. PTR dsl-192-0-2-5.isp.test.",
		"dsl-192-0-2-5.isp.test. A 192.0.2.5",
		"6.2.0.192.in-addr.arpa. PTR host6.good.test.",
		"host6.good.test. A 192.0.2.6",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR v6.good.test.",
		"v6.good.test. AAAA 2001:db8::1",
		"mx.ours.test. A 203.0.113.25",
		"other.good.test. A 192.0.2.77",
	)
	srv.Set("4.2.0.192.in-addr.arpa", dnstest.ServFail)
	strict := `no_ptr = "reject"
fcrdns_fail = "reject"
dynamic = "reject"
helo_ip_mismatch = "reject"
helo_ours = "reject"
helo_no_resolve = "reject"
helo_ptr_mismatch = "score:2"
temperror = "tempfail"
our_names = ["mx.ours.test", "mx.bücher.test"]
our_addresses = ["203.0.113.25"]
`
	e := engine(t, srv, strict)
	tests := []struct {
		name, ip, helo string
		auth           bool
		want           policy.Action
		reply          string
		iprev          string
		fact           string
		score          float64
	}{
		{name: "fcrdns pass", ip: "192.0.2.1", helo: "mail.good.test", want: policy.ActContinue,
			iprev: "iprev=pass policy.iprev=192.0.2.1", fact: "pass"},
		{name: "ipv6 fcrdns pass", ip: "2001:db8::1", helo: "v6.good.test", want: policy.ActContinue,
			iprev: `iprev=pass policy.iprev="2001:db8::1"`, fact: "pass"},
		{name: "fcrdns fail", ip: "192.0.2.2", helo: "liar.test", want: policy.ActReject,
			reply: "550 5.7.25 Client host [192.0.2.2]: reverse DNS name does not resolve back", fact: "fail"},
		{name: "no ptr", ip: "192.0.2.3", helo: "mail.good.test", want: policy.ActReject,
			reply: "550 5.7.25 Client host [192.0.2.3] has no reverse DNS", fact: "fail"},
		{name: "temporary error tempfails", ip: "192.0.2.4", helo: "mail.good.test", want: policy.ActTempfail,
			reply: "451 4.7.25"},
		{name: "dynamic name", ip: "192.0.2.5", helo: "dsl-192-0-2-5.isp.test", want: policy.ActReject,
			reply: "looks like a dynamic address"},
		{name: "helo literal not the client", ip: "192.0.2.1", helo: "[192.0.2.200]", want: policy.ActReject,
			reply: "550 5.7.1 HELO address literal"},
		{name: "helo literal is the client", ip: "192.0.2.1", helo: "[192.0.2.1]", want: policy.ActContinue},
		{name: "helo claims our name", ip: "192.0.2.1", helo: "mx.ours.test", want: policy.ActReject,
			reply: "HELO claims to be this server"},
		{name: "helo claims our unicode name as A-label", ip: "192.0.2.1", helo: "MX.xn--bcher-kva.test", want: policy.ActReject,
			reply: "HELO claims to be this server"},
		{name: "helo claims our name as U-label", ip: "192.0.2.1", helo: "mx.Bücher.test", want: policy.ActReject,
			reply: "HELO claims to be this server"},
		{name: "helo claims our address", ip: "192.0.2.1", helo: "[203.0.113.25]", want: policy.ActReject,
			reply: "HELO claims to be this server"},
		{name: "helo does not resolve", ip: "192.0.2.1", helo: "nowhere.test", want: policy.ActReject,
			reply: "HELO name does not resolve"},
		{name: "helo not the ptr name scores", ip: "192.0.2.6", helo: "other.good.test", want: policy.ActContinue, score: 2},
		{name: "authenticated client exempt", ip: "192.0.2.3", helo: "[192.0.2.200]", auth: true, want: policy.ActContinue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := policy.NewSession()
			s.ClientIP = netip.MustParseAddr(tc.ip)
			s.Helo = tc.helo
			if tc.auth {
				s.Auth.Authen = "alice"
			}
			e.Connect(ctx, s)
			e.Helo(ctx, s)
			e.Mail(ctx, s, "a@sender.test", "")
			_, d := e.Rcpt(ctx, s, "b@dest.test", "")
			if d.Action != tc.want {
				t.Fatalf("action %v (%s), want %v; findings %+v", d.Action, d.Reply, tc.want, s.Findings())
			}
			if tc.reply != "" && !strings.Contains(d.Reply.String(), tc.reply) {
				t.Errorf("reply %q, want %q", d.Reply, tc.reply)
			}
			if got := s.Get(policy.FactFCrDNS); tc.fact != "" && got != tc.fact {
				t.Errorf("rdns/fcrdns = %q, want %q", got, tc.fact)
			}
			if d.Action != policy.ActContinue {
				return
			}
			_ = s.Headers
			s.Headers = []policy.Header{{Name: "From", Value: " a@sender.test"}}
			e.Headers(ctx, s)
			out := e.EOM(ctx, s, policytest.Msg("From: a@sender.test\r\n\r\nhi\r\n"))
			if out.Score != tc.score {
				t.Errorf("score %g, want %g", out.Score, tc.score)
			}
			if tc.iprev == "" {
				return
			}
			ar := policytest.AuthResults(out)
			if !strings.Contains(ar, tc.iprev) {
				t.Errorf("Authentication-Results %q, want %q", ar, tc.iprev)
			}
		})
	}
}

func TestDynamic(t *testing.T) {
	c := &Check{words: map[string]bool{}}
	for _, w := range defaultWords {
		c.words[w] = true
	}
	tests := []struct {
		name, ip string
		dyn      bool
	}{
		{"dsl-192-0-2-5.isp.test", "192.0.2.5", true},
		{"5.2.0.192.static.isp.test", "192.0.2.5", true},
		{"c0000205.isp.test", "192.0.2.5", true},
		{"host192000002005.isp.test", "192.0.2.5", true},
		{"pool-77.isp.test", "198.51.100.9", true},
		{"mail.example.test", "192.0.2.5", false},
		{"mx2.example.test", "192.0.2.2", false},
		{"pool.test", "192.0.2.5", false}, // the registered domain itself is not judged
	}
	for _, tc := range tests {
		got := c.dynamic(tc.name, netip.MustParseAddr(tc.ip)) != ""
		if got != tc.dyn {
			t.Errorf("dynamic(%s, %s) = %v, want %v", tc.name, tc.ip, got, tc.dyn)
		}
	}
}

func TestSetupErrors(t *testing.T) {
	srv := dnstest.Start(t)
	for _, tc := range []struct{ toml, want string }{
		{"no_ptr = \"bounce\"\n", "moat.toml:8: checks.rdns.no_ptr: unknown action"},
		{"our_addresses = [\"mx\"]\n", "checks.rdns.our_addresses[0]"},
		{"helo_ours = \"reject:3\"\n", "only score takes a number"},
	} {
		if err := policytest.BuildError(t, srv.Table("200ms")+policytest.Policy+"[checks.rdns]\n"+tc.toml); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.toml, err, tc.want)
		}
	}
}
