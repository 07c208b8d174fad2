package dmarc

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

func engine(t *testing.T, srv *dnstest.Server, checkToml string) *policy.Engine {
	t.Helper()
	res := policytest.Resolver(t, srv.Addr, 150*time.Millisecond)
	return policytest.EngineWith(t, policytest.Policy+"[checks.dmarc]\n"+checkToml, policytest.WithResolver(res))
}

type input struct {
	from       []string // From: field values
	spfResult  string
	spfDomain  string
	dkimPasses string
	auth       bool
}

func evaluate(t *testing.T, e *policy.Engine, in input) (policy.Outcome, *policy.Session) {
	t.Helper()
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	s.Helo = "client.test"
	if in.auth {
		s.Auth.Authen = "alice"
	}
	e.Connect(ctx, s)
	e.Helo(ctx, s)
	e.Mail(ctx, s, "x@"+in.spfDomain, "")
	e.Rcpt(ctx, s, "bob@dest.test", "")
	s.Set(policy.FactSPFResult, in.spfResult)
	s.Set(policy.FactSPFDomain, in.spfDomain)
	s.Set(policy.FactDKIMPassDomains, in.dkimPasses)
	for _, f := range in.from {
		s.Headers = append(s.Headers, policy.Header{Name: "From", Value: " " + f})
	}
	e.Headers(ctx, s)
	return e.EOM(ctx, s, policytest.Msg("From: x\r\n\r\nbody\r\n")), s
}

func TestDMARC(t *testing.T) {
	srv := dnstest.Start(t,
		`_dmarc.example.test. TXT "v=DMARC1; p=reject; rua=mailto:d@example.test"`,
		`_dmarc.strict.test. TXT "v=DMARC1; p=reject; aspf=s; adkim=s"`,
		`_dmarc.quar.test. TXT "v=DMARC1; p=quarantine"`,
		`_dmarc.subs.test. TXT "v=DMARC1; p=reject; sp=none"`,
		`_dmarc.sampled.test. TXT "v=DMARC1; p=reject; pct=0"`,
		`_dmarc.lenient.test. TXT "V=dmarc1; P=Reject; pct=abc; adkim=x; foo=bar"`,
		`_dmarc.ruaonly.test. TXT "v=DMARC1; p=bogus; rua=mailto:a@ruaonly.test"`,
		`_dmarc.twice.test. TXT "v=DMARC1; p=reject"`,
		`_dmarc.twice.test. TXT "v=DMARC1; p=none"`,
		`_dmarc.partner.test. TXT "v=DMARC1; p=reject"`,
		`_dmarc.twice.example.test. TXT "v=DMARC1; p=reject"`,
		`_dmarc.twice.example.test. TXT "v=DMARC1; p=quarantine"`,
		`_dmarc.xn--bcher-kva.test. TXT "v=DMARC1; p=reject"`,
	)
	srv.Set("_dmarc.slow.test", dnstest.Timeout)
	e := engine(t, srv, "[checks.dmarc.override]\n\"partner.test\" = \"none\"\n")
	tests := []struct {
		name   string
		in     input
		want   policy.Action
		result string
		reply  string
	}{
		{"no record", input{from: []string{"a@nodmarc.test"}, spfResult: "fail", spfDomain: "nodmarc.test"}, policy.ActAccept, "none", ""},
		{"spf aligned relaxed", input{from: []string{"a@example.test"}, spfResult: "pass", spfDomain: "bounce.example.test"}, policy.ActAccept, "pass", ""},
		{"dkim aligned", input{from: []string{"A <a@example.test>"}, spfResult: "fail", spfDomain: "example.test", dkimPasses: "other.test,mail.example.test"}, policy.ActAccept, "pass", ""},
		{"unaligned fails and rejects", input{from: []string{"a@example.test"}, spfResult: "pass", spfDomain: "evil.test", dkimPasses: "evil.test"}, policy.ActReject, "fail",
			"550 5.7.1 Message rejected: DMARC policy of example.test"},
		{"spf fail is not a pass", input{from: []string{"a@example.test"}, spfResult: "fail", spfDomain: "example.test"}, policy.ActReject, "fail", "5.7.1"},
		{"strict spf alignment", input{from: []string{"a@strict.test"}, spfResult: "pass", spfDomain: "bounce.strict.test"}, policy.ActReject, "fail", ""},
		{"strict dkim alignment exact", input{from: []string{"a@strict.test"}, spfResult: "none", spfDomain: "x.test", dkimPasses: "strict.test"}, policy.ActAccept, "pass", ""},
		{"quarantine", input{from: []string{"a@quar.test"}, spfResult: "fail", spfDomain: "quar.test"}, policy.ActQuarantine, "fail", ""},
		{"org domain record, sp=none for subdomain", input{from: []string{"a@mail.subs.test"}, spfResult: "fail", spfDomain: "x.test"}, policy.ActAccept, "fail", ""},
		{"org domain record applies p without sp", input{from: []string{"a@deep.mail.example.test"}, spfResult: "fail", spfDomain: "x.test"}, policy.ActReject, "fail", ""},
		{"pct=0 turns reject into quarantine", input{from: []string{"a@sampled.test"}, spfResult: "fail", spfDomain: "x.test"}, policy.ActQuarantine, "fail", ""},
		{"lenient parsing keeps p=Reject", input{from: []string{"a@lenient.test"}, spfResult: "fail", spfDomain: "x.test"}, policy.ActReject, "fail", ""},
		{"invalid p with rua is none", input{from: []string{"a@ruaonly.test"}, spfResult: "fail", spfDomain: "x.test"}, policy.ActAccept, "fail", ""},
		{"two records mean no policy", input{from: []string{"a@twice.test"}, spfResult: "fail", spfDomain: "x.test"}, policy.ActAccept, "none", ""},
		{"two records at a subdomain: no fallback to the org domain", input{from: []string{"a@twice.example.test"}, spfResult: "fail", spfDomain: "x.test"}, policy.ActAccept, "none", ""},
		{"koi8-r display name", input{from: []string{"=?koi8-r?B?8NLJ18XU?= <a@example.test>"}, spfResult: "pass", spfDomain: "example.test"}, policy.ActAccept, "pass", ""},
		{"iso-2022-jp display name", input{from: []string{"=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?= <a@example.test>"}, spfResult: "pass", spfDomain: "example.test"}, policy.ActAccept, "pass", ""},
		{"windows-1251 display name still judged", input{from: []string{"=?windows-1251?B?z/Do4uXy?= <a@example.test>"}, spfResult: "pass", spfDomain: "evil.test"}, policy.ActReject, "fail", "DMARC policy of example.test"},
		{"unicode From domain looked up as A-label", input{from: []string{"a@Bücher.test"}, spfResult: "pass", spfDomain: "evil.test"}, policy.ActReject, "fail", "DMARC policy of xn--bcher-kva.test"},
		{"unicode From domain aligns with its A-label", input{from: []string{"a@bücher.test"}, spfResult: "fail", spfDomain: "x.test", dkimPasses: "mail.xn--bcher-kva.test"}, policy.ActAccept, "pass", ""},
		{"From domain that is no IDN", input{from: []string{"a@a\u0301\u200d.test"}, spfResult: "pass", spfDomain: "x.test"}, policy.ActReject, "permerror", "exactly one From"},
		{"administrator override", input{from: []string{"a@partner.test"}, spfResult: "fail", spfDomain: "x.test"}, policy.ActAccept, "fail", ""},
		{"several From domains", input{from: []string{"a@example.test, b@other.test"}, spfResult: "pass", spfDomain: "example.test"}, policy.ActReject, "permerror", "exactly one From"},
		{"two From fields", input{from: []string{"a@example.test", "a@example.test"}, spfResult: "pass", spfDomain: "example.test"}, policy.ActReject, "permerror", ""},
		{"same domain twice is fine", input{from: []string{"a@example.test, b@example.test"}, spfResult: "pass", spfDomain: "example.test"}, policy.ActAccept, "pass", ""},
		{"lookup timeout recorded", input{from: []string{"a@slow.test"}, spfResult: "fail", spfDomain: "x.test"}, policy.ActAccept, "temperror", ""},
		{"authenticated exempt", input{from: []string{"a@example.test"}, spfResult: "fail", spfDomain: "evil.test", auth: true}, policy.ActAccept, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, s := evaluate(t, e, tc.in)
			if out.Action != tc.want {
				t.Fatalf("action %v (%s), want %v; findings %+v", out.Action, out.Reply, tc.want, s.Findings())
			}
			if got := s.Get(policy.FactDMARCResult); got != tc.result {
				t.Errorf("dmarc/result = %q, want %q", got, tc.result)
			}
			if tc.reply != "" && !strings.Contains(out.Reply.String(), tc.reply) {
				t.Errorf("reply %q, want %q", out.Reply, tc.reply)
			}
			if out.Action == policy.ActAccept && tc.result != "" {
				ar := policytest.AuthResults(out)
				if !strings.Contains(ar, "dmarc="+tc.result+" header.from=") {
					t.Errorf("Authentication-Results %q lacks dmarc=%s", ar, tc.result)
				}
			}
		})
	}
}

func TestApplyPolicyOff(t *testing.T) {
	srv := dnstest.Start(t, `_dmarc.example.test. TXT "v=DMARC1; p=reject"`)
	e := engine(t, srv, "apply_policy = false\n")
	out, s := evaluate(t, e, input{from: []string{"a@example.test"}, spfResult: "fail", spfDomain: "example.test"})
	if out.Action != policy.ActAccept || s.Get(policy.FactDMARCResult) != "fail" || s.Get(policy.FactDMARCPolicy) != "none" {
		t.Errorf("action %v result %q policy %q; want accept, fail, none", out.Action, s.Get(policy.FactDMARCResult), s.Get(policy.FactDMARCPolicy))
	}
}

func TestParseRecord(t *testing.T) {
	tests := []struct {
		txt  string
		want *Record
		err  error
	}{
		{"v=DMARC1; p=none", &Record{Policy: PolicyNone, Percent: 100}, nil},
		{"v=DMARC1;p=reject;sp=quarantine;adkim=s;aspf=s;pct=20", &Record{Policy: PolicyReject, SubdomainPolicy: PolicyQuarantine, StrictDKIM: true, StrictSPF: true, Percent: 20}, nil},
		{"v=DMARC1; p=quarantine; pct=250", &Record{Policy: PolicyQuarantine, Percent: 100}, nil},
		{"v=DMARC1; p=quarantine; pct=-5; sp=maybe", &Record{Policy: PolicyQuarantine, Percent: 0}, nil},
		{"v=spf1 -all", nil, ErrNotDMARC},
		{"p=reject; v=DMARC1", nil, ErrNotDMARC},
		{"v=DMARC1; sp=reject", nil, ErrNoPolicy},
	}
	for _, tc := range tests {
		t.Run(tc.txt, func(t *testing.T) {
			got, err := ParseRecord(tc.txt)
			if err != tc.err {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if tc.want == nil {
				return
			}
			if got.Policy != tc.want.Policy || got.SubdomainPolicy != tc.want.SubdomainPolicy || got.StrictDKIM != tc.want.StrictDKIM ||
				got.StrictSPF != tc.want.StrictSPF || got.Percent != tc.want.Percent {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAligned(t *testing.T) {
	tests := []struct {
		id, from string
		strict   bool
		want     bool
	}{
		{"example.test", "example.test", true, true},
		{"mail.example.test", "example.test", false, true},
		{"mail.example.test", "example.test", true, false},
		{"example.co.uk", "other.co.uk", false, false}, // public suffix: co.uk is not an organization
		{"a.example.co.uk", "b.example.co.uk", false, true},
		{"", "example.test", false, false},
		{"mail.xn--bcher-kva.example", "Bücher.example", false, true},
		{"xn--bcher-kva.example", "bücher.example", true, true},
		{"bucher.example", "bücher.example", true, false},
	}
	for _, tc := range tests {
		if got := Aligned(tc.id, tc.from, tc.strict); got != tc.want {
			t.Errorf("Aligned(%q, %q, %v) = %v, want %v", tc.id, tc.from, tc.strict, got, tc.want)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add("v=DMARC1; p=reject; sp=none; pct=50; rua=mailto:a@b")
	f.Add("v=DMARC1;;;p")
	f.Add("v=DMARC1; p=; rua=,,")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecord(s)
		if err == nil && (r.Percent < 0 || r.Percent > 100 || r.Policy == "") {
			t.Fatalf("%q gave %+v", s, r)
		}
	})
}
