package spf

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

func engine(t *testing.T, srv *dnstest.Server, checkToml string) *policy.Engine {
	t.Helper()
	return policytest.Engine(t, srv.Table("150ms")+policytest.Policy+"[checks.spf]\n"+checkToml)
}

func TestSPF(t *testing.T) {
	srv := dnstest.Start(t,
		`pass.test. TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`fail.test. TXT "v=spf1 ip4:198.51.100.1 -all"`,
		`soft.test. TXT "v=spf1 ~all"`,
		`broken.test. TXT "v=spf1 ip4:nonsense -all"`,
		`helo.test. TXT "v=spf1 a -all"`,
		`helo.test. A 192.0.2.10`,
		`badhelo.test. TXT "v=spf1 -all"`,
	)
	srv.Set("slow.test", dnstest.Timeout)
	e := engine(t, srv, "")
	tests := []struct {
		name, ip, helo, from string
		auth, trusted        bool
		want                 policy.Action
		reply                string
		result, domain       string
		ar                   string
		score                float64
	}{
		{name: "pass", ip: "192.0.2.10", helo: "helo.test", from: "a@pass.test", want: policy.ActContinue,
			result: "pass", domain: "pass.test", ar: "spf=pass smtp.mailfrom=a@pass.test"},
		{name: "fail refused at rcpt", ip: "192.0.2.10", helo: "helo.test", from: "a@fail.test", want: policy.ActReject,
			reply: "550 5.7.23 SPF fail: fail.test does not designate [192.0.2.10] as permitted sender", result: "fail", domain: "fail.test"},
		{name: "softfail scores", ip: "192.0.2.10", helo: "helo.test", from: "a@soft.test", want: policy.ActContinue,
			result: "softfail", domain: "soft.test", score: 1, ar: "spf=softfail"},
		{name: "temperror tempfails", ip: "192.0.2.10", helo: "helo.test", from: "a@slow.test", want: policy.ActTempfail,
			reply: "451 4.7.24", result: "temperror", domain: "slow.test"},
		{name: "permerror recorded", ip: "192.0.2.10", helo: "helo.test", from: "a@broken.test", want: policy.ActContinue,
			result: "permerror", domain: "broken.test", ar: "spf=permerror"},
		{name: "none", ip: "192.0.2.10", helo: "helo.test", from: "a@nospf.test", want: policy.ActContinue,
			result: "none", domain: "nospf.test", ar: "spf=none"},
		{name: "null sender uses helo", ip: "192.0.2.10", helo: "helo.test", from: "", want: policy.ActContinue,
			result: "pass", domain: "helo.test", ar: "spf=pass smtp.helo=helo.test"},
		{name: "null sender helo fail", ip: "192.0.2.10", helo: "badhelo.test", from: "", want: policy.ActReject,
			reply: "550 5.7.23 SPF fail: badhelo.test", result: "fail", domain: "badhelo.test"},
		{name: "helo identity recorded", ip: "192.0.2.10", helo: "badhelo.test", from: "a@pass.test", want: policy.ActContinue,
			result: "pass", domain: "pass.test", ar: "spf=fail smtp.helo=badhelo.test"},
		{name: "authenticated not checked", ip: "203.0.113.1", helo: "helo.test", from: "a@fail.test", auth: true, want: policy.ActContinue},
		{name: "trusted not checked", ip: "203.0.113.1", helo: "helo.test", from: "a@fail.test", trusted: true, want: policy.ActContinue},
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
			if tc.trusted {
				s.Set(policy.FactTrustedNetwork, "yes")
			}
			e.Helo(ctx, s)
			if d := e.Mail(ctx, s, tc.from, ""); d.Action != policy.ActContinue {
				t.Fatalf("MAIL answered %+v: rejections must wait for RCPT", d)
			}
			if got := s.Get(policy.FactSPFResult); got != tc.result {
				t.Errorf("spf/result = %q, want %q", got, tc.result)
			}
			if got := s.Get(policy.FactSPFDomain); got != tc.domain {
				t.Errorf("spf/domain = %q, want %q", got, tc.domain)
			}
			_, d := e.Rcpt(ctx, s, "b@dest.test", "")
			if d.Action != tc.want {
				t.Fatalf("action %v (%s), want %v; findings %+v", d.Action, d.Reply, tc.want, s.Findings())
			}
			if tc.reply != "" && !strings.Contains(d.Reply.String(), tc.reply) {
				t.Errorf("reply %q, want %q", d.Reply, tc.reply)
			}
			if d.Action != policy.ActContinue {
				return
			}
			s.Headers = []policy.Header{{Name: "From", Value: " " + tc.from}}
			e.Headers(ctx, s)
			out := e.EOM(ctx, s, policytest.Msg("From: x@y\r\n\r\nhi\r\n"))
			if out.Score != tc.score {
				t.Errorf("score %g, want %g", out.Score, tc.score)
			}
			ar := policytest.AuthResults(out)
			if tc.ar != "" && !strings.Contains(ar, tc.ar) {
				t.Errorf("Authentication-Results %q, want %q", ar, tc.ar)
			}
			if (tc.auth || tc.trusted) && strings.Contains(ar, "spf=") {
				t.Errorf("exempt client got an SPF result: %q", ar)
			}
		})
	}
}

func TestSetupErrors(t *testing.T) {
	srv := dnstest.Start(t)
	toml := fmt.Sprintf("[dns]\nservers = [%q]\n", srv.Addr) + policytest.Policy + "[checks.spf]\nfail = \"drop\"\n"
	if err := policytest.BuildError(t, toml); err == nil || !strings.Contains(err.Error(), "moat.toml:6: checks.spf.fail: unknown action") {
		t.Fatalf("err = %v", err)
	}
}

// TestErrOnlyForErrors: pass, none, fail … explain themselves in Detail; only temperror and permerror carry
// an Err (which the engine logs as an error).
func TestErrOnlyForErrors(t *testing.T) {
	srv := dnstest.Start(t,
		`pass.test. TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`broken.test. TXT "v=spf1 ip4:nonsense -all"`,
		`helo.test. TXT "v=spf1 a -all"`,
		`helo.test. A 192.0.2.10`,
	)
	srv.Set("slow.test", dnstest.Timeout)
	e := engine(t, srv, "temperror = \"ignore\"\n")
	for _, tc := range []struct {
		from    string
		result  string
		wantErr bool
	}{
		{"a@pass.test", "pass", false},
		{"a@nospf.test", "none", false},
		{"a@broken.test", "permerror", true},
		{"a@slow.test", "temperror", true},
	} {
		t.Run(tc.result, func(t *testing.T) {
			ctx := context.Background()
			s := policy.NewSession()
			s.ClientIP = netip.MustParseAddr("192.0.2.10")
			s.Helo = "helo.test"
			e.Connect(ctx, s)
			e.Helo(ctx, s)
			e.Mail(ctx, s, tc.from, "")
			if s.Get(policy.FactSPFResult) != tc.result {
				t.Fatalf("spf/result = %q, want %q", s.Get(policy.FactSPFResult), tc.result)
			}
			var seen int
			for _, f := range s.Findings() {
				if f.Check != "spf" {
					continue
				}
				seen++
				if (f.Err != nil) != (tc.wantErr && f.Status == policy.Status(tc.result)) {
					t.Errorf("finding %s %q: Err = %v", f.Status, f.Detail, f.Err)
				}
			}
			if seen != 2 {
				t.Errorf("%d spf findings, want 2 (MAIL FROM and HELO)", seen)
			}
		})
	}
}

// TestUnicodeDomains: U-label domains are checked as A-labels, and the fact holds the A-label for DMARC; a
// domain that is no valid IDN is a permerror.
func TestUnicodeDomains(t *testing.T) {
	srv := dnstest.Start(t,
		`xn--bcher-kva.test. TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`xn--mnchen-3ya.test. TXT "v=spf1 ip4:192.0.2.10 -all"`,
	)
	e := engine(t, srv, "")
	for _, tc := range []struct {
		helo, from, result, domain, helo2 string
	}{
		{"münchen.test", "a@Bücher.test", "pass", "xn--bcher-kva.test", "spf=pass smtp.helo=xn--mnchen-3ya.test"},
		{"münchen.test", "a@a\u0301\u200d.test", "permerror", "a\u0301\u200d.test", ""},
	} {
		t.Run(tc.from, func(t *testing.T) {
			ctx := context.Background()
			s := policy.NewSession()
			s.ClientIP = netip.MustParseAddr("192.0.2.10")
			s.Helo = tc.helo
			e.Connect(ctx, s)
			e.Helo(ctx, s)
			e.Mail(ctx, s, tc.from, "")
			if s.Get(policy.FactSPFResult) != tc.result || s.Get(policy.FactSPFDomain) != tc.domain {
				t.Fatalf("spf/result %q spf/domain %q, want %q %q; findings %+v", s.Get(policy.FactSPFResult), s.Get(policy.FactSPFDomain),
					tc.result, tc.domain, s.Findings())
			}
			if tc.helo2 == "" {
				return
			}
			e.Rcpt(ctx, s, "b@dest.test", "")
			s.Headers = []policy.Header{{Name: "From", Value: " x@y.test"}}
			e.Headers(ctx, s)
			out := e.EOM(ctx, s, policytest.Msg("From: x@y.test\r\n\r\nhi\r\n"))
			if ar := policytest.AuthResults(out); !strings.Contains(ar, tc.helo2) {
				t.Errorf("Authentication-Results %q, want %q", ar, tc.helo2)
			}
		})
	}
}
