package relay_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/relay"
)

// TestUnqualifiedRecipient: a bare user name from an untrusted, unauthenticated client is refused (the MTA
// would append a domain moat does not know), except postmaster (RFC 5321 section 4.5.1); with
// unqualified_domain it is checked as user@that domain.
func TestUnqualifiedRecipient(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+relayConfig)
	untrusted := "198.51.100.7"
	for _, rcpt := range []string{"nobody", "Victim", "<nobody>"} {
		d := run(t, e, envelope{ip: untrusted, from: "a@remote.example", rcpt: rcpt})
		if d.Action != policy.ActReject || d.Reply.Code != 550 || d.Reply.Enhanced != "5.7.1" || d.Reason != relay.ReasonUnqualified {
			t.Fatalf("RCPT TO:<%s>: %+v, want 550 5.7.1 unqualified", rcpt, d)
		}
		want := "<" + strings.Trim(rcpt, "<>") + ">: " + relay.UnqualifiedText + " (ref="
		if !strings.HasPrefix(d.Reply.Text, want) {
			t.Errorf("RCPT TO:<%s>: reply %q, want %q…", rcpt, d.Reply.Text, want)
		}
	}
	for _, env := range []envelope{
		{ip: untrusted, from: "a@remote.example", rcpt: "Postmaster"},
		{ip: "10.1.2.3", from: "a@moat.test", rcpt: "nobody"},
		{ip: untrusted, auth: "alice", from: "alice@moat.test", rcpt: "nobody"},
		{local: true, from: "root", rcpt: "nobody"},
	} {
		if d := run(t, e, env); d.Action != policy.ActContinue {
			t.Errorf("%+v: refused %+v", env, d)
		}
	}

	// unqualified_domain: the bare user is user@moat.test, a local domain.
	e = policytest.Engine(t, policytest.Policy+relayConfig+"unqualified_domain = \"MOAT.test.\"\n")
	if d := run(t, e, envelope{ip: untrusted, from: "a@remote.example", rcpt: "nobody"}); d.Action != policy.ActContinue {
		t.Errorf("with unqualified_domain: %+v", d)
	}
	// Hops still decide for routing forms without a domain.
	if d := run(t, e, envelope{ip: untrusted, from: "a@remote.example", rcpt: "remote.example!victim"}); d.Action != policy.ActReject {
		t.Errorf("bang path without domain, unqualified_domain set: %+v", d)
	}
	for _, tt := range []struct{ value, want string }{
		{"remote.example", "moat.toml:8: checks.relay.unqualified_domain: remote.example is neither a local nor a relay domain"},
		{"bad domain", "moat.toml:8: checks.relay.unqualified_domain:"},
	} {
		err := policytest.BuildError(t, policytest.Policy+relayConfig+"unqualified_domain = \""+tt.value+"\"\n")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("unqualified_domain = %q: %v, want %q", tt.value, err, tt.want)
		}
	}
}

// TestLocalSubmissionNeedsFact: a session without a client IP is trusted only when it is marked as a local
// submission and trust_local_submission is on; the absence of an IP proves nothing.
func TestLocalSubmissionNeedsFact(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name    string
		conf    string
		local   bool
		trusted bool
	}{
		{"no ip, no fact", "", false, false},
		{"no ip, local submission", "", true, true},
		{"local submission, not trusted by configuration", "trust_local_submission = false\n", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := policytest.Engine(t, policytest.Policy+relayConfig+tt.conf)
			d := run(t, e, envelope{local: tt.local, from: "root@moat.test", rcpt: "victim@remote.example"})
			if got := d.Action == policy.ActContinue; got != tt.trusted {
				t.Errorf("relayed = %v, want %v (%+v)", got, tt.trusted, d)
			}
			s := policy.NewSession()
			if tt.local {
				s.Set(policy.FactLocalSubmission, "yes")
			}
			e.Connect(ctx, s)
			if got := s.Get(policy.FactTrustedNetwork) == "yes"; got != tt.trusted {
				t.Errorf("relay/trusted = %v, want %v", got, tt.trusted)
			}
		})
	}
	// A client IP decides by itself: the fact does not make an untrusted network trusted.
	e := policytest.Engine(t, policytest.Policy+relayConfig)
	if d := run(t, e, envelope{ip: "198.51.100.7", local: true, from: "a@moat.test", rcpt: "victim@remote.example"}); d.Action != policy.ActReject {
		t.Errorf("untrusted IP with the local fact relayed: %+v", d)
	}
}

// TestWideLists: settings that make an open relay are refused at setup with file, line and key, unless
// allow_wide_lists = true.
func TestWideLists(t *testing.T) {
	dir := t.TempDir()
	nets := filepath.Join(dir, "nets")
	if err := os.WriteFile(nets, []byte("10.0.0.0/8\n# all of it\n0.0.0.0/0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const head = "[checks.relay]\nlocal_domains = [\"moat.test\"]\n"
	refused := []struct{ name, toml, want string }{
		{"ipv4 everything", `trusted_networks = ["0.0.0.0/0"]`, `moat.toml:5: checks.relay.trusted_networks: "0.0.0.0/0": relay: entry too wide`},
		{"ipv4 /7", `trusted_networks = ["10.0.0.0/8", "0.0.0.0/7"]`, "checks.relay.trusted_networks: \"0.0.0.0/7\""},
		{"ipv6 everything", `trusted_networks = ["::/0"]`, "checks.relay.trusted_networks"},
		{"ipv6 /3", `trusted_networks = ["2000::/3"]`, "shortest prefix allowed is /16"},
		{"v4-mapped everything", `trusted_networks = ["::ffff:0.0.0.0/96"]`, "entry too wide"},
		{"file", `trusted_networks_file = "` + nets + `"`, "moat.toml:5: checks.relay.trusted_networks_file: " + nets + ":3: \"0.0.0.0/0\""},
		{"relay tld", `relay_domains = [".com"]`, `moat.toml:5: checks.relay.relay_domains: ".com": relay: entry too wide: com is a public suffix`},
		{"relay tld plain", `relay_domains = ["com."]`, "com is a public suffix"},
		{"local two-label suffix", `local_domains = ["moat.test", "co.uk"]`, "moat.toml:4: checks.relay.local_domains: \"co.uk\""},
		{"private suffix", `relay_domains = ["github.io"]`, "github.io is a public suffix"},
		{"idn suffix", `relay_domains = ["рф"]`, "xn--p1ai is a public suffix"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			text := policytest.Policy + head + tt.toml + "\n"
			if strings.HasPrefix(tt.toml, "local_domains") {
				text = policytest.Policy + "[checks.relay]\n" + tt.toml + "\n"
			}
			err := policytest.BuildError(t, text)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, tt.want)
			}
			if err := policytest.BuildError(t, text+"allow_wide_lists = true\n"); err != nil {
				t.Errorf("with allow_wide_lists: %v", err)
			}
		})
	}
	for _, ok := range []string{
		`trusted_networks = ["10.0.0.0/8", "2001:db8::/16", "127.0.0.1", "::1"]`,
		`local_domains = ["localhost", "moat.test", "example.co.uk", "me.github.io", "[192.0.2.1]"]`,
	} {
		if err := policytest.BuildError(t, policytest.Policy+"[checks.relay]\n"+ok+"\nrelay_domains = [\"partner.example\"]\n"); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	// With the override the wide network really is trusted.
	e := policytest.Engine(t, policytest.Policy+head+"trusted_networks = [\"0.0.0.0/0\"]\nallow_wide_lists = true\n")
	if d := run(t, e, envelope{ip: "198.51.100.7", from: "a@b.example", rcpt: "x@remote.example"}); d.Action != policy.ActContinue {
		t.Errorf("allow_wide_lists: %+v", d)
	}
}

// TestInlineErrorLocatedOnce: an error in an inline list names the file, line and key once.
func TestInlineErrorLocatedOnce(t *testing.T) {
	err := policytest.BuildError(t, policytest.Policy+"[checks.relay]\nlocal_domains = [\"a.test\", \"bad domain.test\"]\n")
	if err == nil {
		t.Fatal("no error")
	}
	const want = `moat.toml:4: checks.relay.local_domains: "bad domain.test": lists: malformed entry: character ' ' in domain "bad domain.test"`
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if n := strings.Count(err.Error(), "moat.toml"); n != 1 {
		t.Errorf("the location appears %d times: %q", n, err)
	}
}
