package senderlists_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	_ "github.com/moatmail/moat/rules/senderlists"
)

// Two fake checks stand in for the real ones, under names from policy.Order: "test" is an anti-spam check
// that refuses every recipient and every message (like a DNSBL hit or a spam score), "clamd" a virus scanner
// that finds a virus in every message. A white-list hit must silence the first and never the second.
type fakeAntispam struct{}

func (fakeAntispam) Name() string      { return "test" }
func (fakeAntispam) Kind() policy.Kind { return policy.KindAntispam }
func (fakeAntispam) Rcpt(context.Context, *policy.Session, *policy.Recipient) []policy.Finding {
	return []policy.Finding{policy.Rejectf("listed", "dnsbl", 554, "5.7.1", "listed in a DNSBL")}
}
func (fakeAntispam) Scan(context.Context, *policy.Session, policy.Message) []policy.Finding {
	return []policy.Finding{policy.Rejectf("spam", "spam", 550, "5.7.1", "spam")}
}

type fakeVirus struct{}

func (fakeVirus) Name() string      { return "clamd" }
func (fakeVirus) Kind() policy.Kind { return policy.KindVirus }
func (fakeVirus) Scan(_ context.Context, s *policy.Session, _ policy.Message) []policy.Finding {
	if s.HeaderValues("X-Virus") != nil {
		return []policy.Finding{policy.Rejectf("found", "virus", 554, "5.7.1", "virus found")}
	}
	return nil
}

// fakeAuth stands in for auth/spf and auth/dkim: their tables must be enabled for proof=spf/dkim/dmarc entries
// to be accepted, and the tests set the facts those checks would set themselves.
type fakeAuth struct{ name string }

func (f fakeAuth) Name() string                                            { return f.name }
func (fakeAuth) Kind() policy.Kind                                         { return policy.KindInfo }
func (fakeAuth) Connect(context.Context, *policy.Session) []policy.Finding { return nil }

// authChecks enables the fake SPF and DKIM checks.
const authChecks = "[checks.spf]\n[checks.dkim]\n"

func init() {
	policy.Register("spf", func(sec *config.Section, _ *policy.Env) (policy.Check, error) { return fakeAuth{"spf"}, nil })
	policy.Register("dkim", func(sec *config.Section, _ *policy.Env) (policy.Check, error) { return fakeAuth{"dkim"}, nil })
	policy.Register("test", func(sec *config.Section, _ *policy.Env) (policy.Check, error) { return fakeAntispam{}, nil })
	policy.Register("clamd", func(sec *config.Section, _ *policy.Env) (policy.Check, error) { return fakeVirus{}, nil })
}

// tx is one message through the engine.
type tx struct {
	ip         string
	from       string
	rcpts      []string
	spf        string // spf/result, set at MAIL for the sender's domain
	spfDomain  string // default: the sender's domain
	dkim       string // dkim/pass-domains, set before end of message
	headerFrom string
	virus      bool
}

type result struct {
	rcpt []policy.Decision
	eom  policy.Outcome
	s    *policy.Session
}

func (x tx) run(t *testing.T, e *policy.Engine) result {
	t.Helper()
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr(x.ip)
	e.Connect(ctx, s)
	if d := e.Mail(ctx, s, x.from, ""); d.Action != policy.ActContinue {
		t.Fatalf("MAIL refused: %+v", d)
	}
	if x.spf != "" {
		d := x.spfDomain
		if d == "" {
			d = s.From.Domain
		}
		s.Set(policy.FactSPFResult, x.spf)
		s.Set(policy.FactSPFDomain, d)
	}
	var res result
	res.s = s
	for _, r := range x.rcpts {
		_, d := e.Rcpt(ctx, s, r, "")
		res.rcpt = append(res.rcpt, d)
	}
	if len(s.AcceptedRcpts()) == 0 {
		return res
	}
	hf := x.headerFrom
	if hf == "" {
		hf = x.from
	}
	s.Headers = []policy.Header{{Name: "From", Value: " <" + hf + ">"}, {Name: "X-Moat-Senderlist", Value: " forged"}}
	if x.virus {
		s.Headers = append(s.Headers, policy.Header{Name: "X-Virus", Value: " yes"})
	}
	e.Headers(ctx, s)
	if x.dkim != "" {
		s.Set(policy.FactDKIMPassDomains, x.dkim)
	}
	res.eom = e.EOM(ctx, s, policytest.Msg("From: <"+hf+">\r\n\r\nhello\r\n"))
	return res
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLists(t *testing.T) {
	white := writeFile(t, "white", `# white list
friend@example.com
partner.example
.bigcorp.example proof=dkim
news.example proof=spf
198.51.100.0/24
*@*%%%%.numbers.example proof=none
dmarc.example proof=dmarc
both.example proof=none
`)
	black := writeFile(t, "black", `.spammy.example
192.0.2.66
both.example
friend@spammy.example
<>
dkimonly.example
`)
	e := policytest.Engine(t, policytest.Policy+authChecks+`
[checks.test]
[checks.clamd]
[checks.senderlists]
whitelist_file = "`+white+`"
whitelist = ["friend@spammy.example", "dkimonly.example proof=dkim"]
blacklist_file = "`+black+`"

[checks.senderlists.recipient."boss@moat.test"]
whitelist = ["boss-friend@remote.example"]
blacklist = ["annoying.example"]

[checks.senderlists.recipient."sales.test"]
whitelist = ["customer.example proof=none"]
`)
	const stranger = "203.0.113.9"
	type want struct {
		rcpt string // "accept" (white-listed: the anti-spam reject is skipped), "spam" (the anti-spam reject applies), "black"
		eom  string // "accept", "reject-spam", "reject-black", "reject-virus", "" (not reached)
	}
	tests := []struct {
		name string
		tx   tx
		want want
	}{
		{"nobody", tx{ip: stranger, from: "x@remote.example", rcpts: []string{"a@moat.test"}}, want{"spam", ""}},
		{"address, no proof needed", tx{ip: stranger, from: "Friend@EXAMPLE.com", rcpts: []string{"a@moat.test"}}, want{"accept", "accept"}},
		{"domain without proof", tx{ip: stranger, from: "x@partner.example", rcpts: []string{"a@moat.test"}}, want{"spam", ""}},
		{"domain with spf", tx{ip: stranger, from: "x@partner.example", rcpts: []string{"a@moat.test"}, spf: "pass"}, want{"accept", "accept"}},
		{"domain with spf fail", tx{ip: stranger, from: "x@partner.example", rcpts: []string{"a@moat.test"}, spf: "fail"}, want{"spam", ""}},
		{"domain with spf for another domain", tx{ip: stranger, from: "x@partner.example", rcpts: []string{"a@moat.test"}, spf: "pass", spfDomain: "evil.example"}, want{"spam", ""}},
		{"subdomain entry with dkim", tx{ip: stranger, from: "x@mail.bigcorp.example", rcpts: []string{"a@moat.test"}, dkim: "bigcorp.example"}, want{"spam", ""}},
		{"spf-only entry with dkim", tx{ip: stranger, from: "x@news.example", rcpts: []string{"a@moat.test"}, dkim: "news.example"}, want{"spam", ""}},
		{"ip entry", tx{ip: "198.51.100.77", from: "anyone@anywhere.example", rcpts: []string{"a@moat.test"}}, want{"accept", "accept"}},
		{"pattern entry", tx{ip: stranger, from: "x@a1234.numbers.example", rcpts: []string{"a@moat.test"}}, want{"accept", "accept"}},
		{"black domain", tx{ip: stranger, from: "x@mail.spammy.example", rcpts: []string{"a@moat.test"}}, want{"black", ""}},
		{"black ip", tx{ip: "192.0.2.66", from: "x@remote.example", rcpts: []string{"a@moat.test"}}, want{"black", ""}},
		{"black null sender", tx{ip: stranger, from: "", rcpts: []string{"a@moat.test"}}, want{"black", ""}},
		{"on both lists: white wins", tx{ip: stranger, from: "x@both.example", rcpts: []string{"a@moat.test"}}, want{"accept", "accept"}},
		{"white address inside black domain", tx{ip: stranger, from: "friend@spammy.example", rcpts: []string{"a@moat.test"}}, want{"accept", "accept"}},
		{"white wins even over the IP black list", tx{ip: "192.0.2.66", from: "friend@example.com", rcpts: []string{"a@moat.test"}}, want{"accept", "accept"}},
		{"virus is never white-listed", tx{ip: stranger, from: "friend@example.com", rcpts: []string{"a@moat.test"}, virus: true}, want{"accept", "reject-virus"}},
		{"per-recipient white", tx{ip: stranger, from: "boss-friend@remote.example", rcpts: []string{"boss@moat.test"}}, want{"accept", "accept"}},
		{"per-recipient white is not global", tx{ip: stranger, from: "boss-friend@remote.example", rcpts: []string{"other@moat.test"}}, want{"spam", ""}},
		{"per-recipient black", tx{ip: stranger, from: "x@annoying.example", rcpts: []string{"boss@moat.test"}}, want{"black", ""}},
		{"per-recipient black is not global", tx{ip: stranger, from: "x@annoying.example", rcpts: []string{"other@moat.test"}}, want{"spam", ""}},
		{"per-domain white", tx{ip: stranger, from: "buyer@customer.example", rcpts: []string{"anyone@sales.test"}}, want{"accept", "accept"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.tx.run(t, e)
			d := res.rcpt[0]
			switch tt.want.rcpt {
			case "accept":
				if d.Action != policy.ActContinue {
					t.Fatalf("RCPT: %+v, want accepted", d)
				}
			case "spam":
				if d.Action != policy.ActReject || d.Check != "test" {
					t.Fatalf("RCPT: %+v, want the anti-spam reject", d)
				}
			case "black":
				// The fake anti-spam check runs first in Order and also refuses; the black-list finding
				// must be there with its own reply.
				f, _ := res.s.Finding("senderlists", res.s.Rcpts[0])
				if d.Action != policy.ActReject || f.Verdict != policy.Reject || f.Reason != "blacklist" ||
					f.Reply.Code != 550 || f.Reply.Enhanced != "5.7.1" || !strings.Contains(f.Reply.Text, "sender rejected by local policy") {
					t.Fatalf("RCPT: %+v, senderlists finding %+v; want the black-list reject 550 5.7.1", d, f)
				}
			}
			switch tt.want.eom {
			case "accept":
				if res.eom.Action != policy.ActAccept {
					t.Fatalf("EOM: %+v, want accepted", res.eom.Decision)
				}
			case "reject-virus":
				if res.eom.Action != policy.ActReject || res.eom.Check != "clamd" {
					t.Fatalf("EOM: %+v, want the virus reject", res.eom.Decision)
				}
			}
		})
	}
}

// TestProofAtEndOfMessage covers entries that need DKIM or DMARC, which are only known at end of message.
func TestProofAtEndOfMessage(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+authChecks+`
[checks.clamd]
[checks.senderlists]
whitelist = [".bigcorp.example proof=dkim", "dmarc.example proof=dmarc", "any.example", "dkimonly.example proof=dkim"]
blacklist = ["dkimonly.example"]
`)
	tests := []struct {
		name      string
		tx        tx
		rcptOK    bool
		wantWhite bool // white-listed at end of message
		wantEOM   policy.Action
		entry     string // expected in the header
	}{
		{"dkim aligned", tx{ip: "203.0.113.9", from: "x@mail.bigcorp.example", rcpts: []string{"a@moat.test"}, dkim: "bigcorp.example"}, true, true, policy.ActAccept, ".bigcorp.example"},
		{"dkim other domain", tx{ip: "203.0.113.9", from: "x@mail.bigcorp.example", rcpts: []string{"a@moat.test"}, dkim: "evil.example"}, true, false, policy.ActAccept, ""},
		{"dkim public suffix", tx{ip: "203.0.113.9", from: "x@mail.bigcorp.example", rcpts: []string{"a@moat.test"}, dkim: "example"}, true, false, policy.ActAccept, ""},
		{"no dkim", tx{ip: "203.0.113.9", from: "x@bigcorp.example", rcpts: []string{"a@moat.test"}}, true, false, policy.ActAccept, ""},
		{"dmarc via dkim", tx{ip: "203.0.113.9", from: "bounce@dmarc.example", headerFrom: "ceo@news.dmarc.example", rcpts: []string{"a@moat.test"}, dkim: "dmarc.example"}, true, true, policy.ActAccept, "dmarc.example"},
		{"dmarc via spf", tx{ip: "203.0.113.9", from: "ceo@dmarc.example", rcpts: []string{"a@moat.test"}, spf: "pass"}, true, true, policy.ActAccept, "dmarc.example"},
		{"dmarc From: elsewhere", tx{ip: "203.0.113.9", from: "ceo@dmarc.example", headerFrom: "ceo@evil.example", rcpts: []string{"a@moat.test"}, dkim: "evil.example"}, true, false, policy.ActAccept, ""},
		{"any: spf at rcpt", tx{ip: "203.0.113.9", from: "x@any.example", rcpts: []string{"a@moat.test"}, spf: "pass"}, true, true, policy.ActAccept, "any.example"},
		{"any: dkim at eom", tx{ip: "203.0.113.9", from: "x@any.example", rcpts: []string{"a@moat.test"}, dkim: "any.example"}, true, true, policy.ActAccept, "any.example"},
		{"black unless dkim: proven", tx{ip: "203.0.113.9", from: "x@dkimonly.example", rcpts: []string{"a@moat.test"}, dkim: "dkimonly.example"}, true, true, policy.ActAccept, "dkimonly.example"},
		{"black unless dkim: not proven", tx{ip: "203.0.113.9", from: "x@dkimonly.example", rcpts: []string{"a@moat.test"}}, true, false, policy.ActReject, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.tx.run(t, e)
			if got := res.rcpt[0].Action == policy.ActContinue; got != tt.rcptOK {
				t.Fatalf("RCPT accepted = %v: %+v", got, res.rcpt[0])
			}
			if res.eom.Action != tt.wantEOM {
				t.Fatalf("EOM %+v, want %v", res.eom.Decision, tt.wantEOM)
			}
			if tt.wantEOM == policy.ActReject {
				if res.eom.Reply.Code != 550 || res.eom.Reply.Enhanced != "5.7.1" || res.eom.Check != "senderlists" {
					t.Errorf("EOM reply %+v", res.eom.Decision)
				}
				return
			}
			if got := res.s.Whitelisted(nil); got != tt.wantWhite {
				t.Errorf("white-listed = %v, want %v", got, tt.wantWhite)
			}
			var hdr []string
			for _, h := range res.eom.AddHeaders {
				if h.Name == "X-Moat-Senderlist" {
					hdr = append(hdr, h.Value)
				}
			}
			if tt.entry == "" {
				if len(hdr) != 0 {
					t.Errorf("header %q, want none", hdr)
				}
			} else if len(hdr) != 1 || !strings.Contains(hdr[0], `entry="`+tt.entry) || !strings.Contains(hdr[0], "source=moat.toml:") {
				t.Errorf("header %q, want one naming %q and its source", hdr, tt.entry)
			}
			// The incoming forged copy is removed.
			removed := false
			for _, r := range res.eom.RemoveHeaders {
				removed = removed || strings.EqualFold(r.Name, "X-Moat-Senderlist")
			}
			if !removed {
				t.Error("incoming X-Moat-Senderlist not removed")
			}
		})
	}
}

// TestMixedRecipients: a message is white-listed at end of message only when every accepted recipient is.
func TestMixedRecipients(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+`
[checks.senderlists]
blacklist = ["192.0.2.1"]
[checks.senderlists.recipient."boss@moat.test"]
whitelist = ["pal@remote.example"]
`)
	res := tx{ip: "203.0.113.9", from: "pal@remote.example", rcpts: []string{"boss@moat.test", "other@moat.test"}}.run(t, e)
	if res.s.Whitelisted(nil) {
		t.Error("message white-listed although one recipient is not")
	}
	if !res.s.Whitelisted(res.s.Rcpts[0]) || res.s.Whitelisted(res.s.Rcpts[1]) {
		t.Error("per-recipient white-listing wrong")
	}
}

// TestBlacklistReply: without other checks, the black list alone answers 550 5.7.1 with the configured text.
func TestBlacklistReply(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+`
[checks.senderlists]
blacklist = [".spammy.example"]
blacklist_text = "<{addr}>: go away"
`)
	res := tx{ip: "203.0.113.9", from: "x@Mail.Spammy.Example", rcpts: []string{"a@moat.test"}}.run(t, e)
	d := res.rcpt[0]
	if d.Action != policy.ActReject || d.Check != "senderlists" || d.Reply.Code != 550 || d.Reply.Enhanced != "5.7.1" ||
		!strings.HasPrefix(d.Reply.Text, "<x@mail.spammy.example>: go away (ref=") {
		t.Fatalf("RCPT: %+v", d)
	}
}

func TestSetupErrors(t *testing.T) {
	bad := writeFile(t, "bad", "ok.example\n# c\nx@y.example proof=sometimes\n")
	tests := []struct{ name, toml, want string }{
		{"bad proof in file", `whitelist_file = "` + bad + `"`, bad + ":3:"},
		{"proof on black list", `blacklist = ["a.example proof=spf"]`, "only applies to white-list"},
		{"unknown option", `whitelist = ["a.example weight=3"]`, "unknown option"},
		{"bad pattern", `blacklist = ["*@x y"]`, "checks.senderlists.blacklist"},
		{"bad default", `whitelist = ["a.example"]
default_domain_proof = "maybe"`, "checks.senderlists.default_domain_proof"},
		{"bad recipient key", `[checks.senderlists.recipient."not an address"]
whitelist = ["a.example"]`, "not an address or a domain"},
		{"empty", `header = "X-A"`, "no entries"},
		{"ip with proof", `whitelist = ["192.0.2.1 proof=spf"]`, "needs no proof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := policytest.BuildError(t, policytest.Policy+"[checks.senderlists]\n"+tt.toml+"\n"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestStages: without the header and without DKIM/DMARC proofs the check does not ask for end of message.
func TestStages(t *testing.T) {
	tests := []struct {
		toml string
		eom  bool
	}{
		{`whitelist = ["a.example"]`, true}, // header on, proof any
		{"header = \"\"\nwhitelist = [\"a.example proof=spf\", \"192.0.2.1\"]\nblacklist = [\"b.example\"]", false},
		{"header = \"\"\nwhitelist = [\"a.example proof=spf\"]\n[checks.senderlists.recipient.\"x@moat.test\"]\nwhitelist = [\"c.example proof=dkim\"]", true},
	}
	for _, tt := range tests {
		e := policytest.Engine(t, policytest.Policy+authChecks+"[checks.senderlists]\n"+tt.toml+"\n")
		if got := e.Stages()[policy.StageEOM]; got != tt.eom {
			t.Errorf("%q: end-of-message stage %v, want %v", tt.toml, got, tt.eom)
		}
		if !e.Stages()[policy.StageRcpt] {
			t.Errorf("%q: no rcpt stage", tt.toml)
		}
	}
}
