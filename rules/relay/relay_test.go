package relay_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/relay"
	"github.com/moatmail/moat/rules/relay/relaytest"
)

const relayConfig = `
[checks.relay]
local_domains = ["moat.test", ".sub.moat.test", "[192.0.2.25]", "bücher.example"]
relay_domains = ["partner.example"]
trusted_networks = ["10.0.0.0/8", "2001:db8:1::/48"]
`

type envelope struct {
	ip         string
	local      bool // the milter marked the session a local submission
	auth       string
	helo       string
	from, rcpt string
}

// run takes one envelope through the engine and returns the RCPT decision.
func run(t *testing.T, e *policy.Engine, env envelope) policy.Decision {
	t.Helper()
	ctx := context.Background()
	s := policy.NewSession()
	if env.ip != "" {
		s.ClientIP = netip.MustParseAddr(env.ip)
	}
	s.Auth.Authen = env.auth
	if env.local {
		s.Set(policy.FactLocalSubmission, "yes")
	}
	if d := e.Connect(ctx, s); d.Action != policy.ActContinue {
		t.Fatalf("connect: %+v", d)
	}
	s.Helo = env.helo
	if d := e.Helo(ctx, s); d.Action != policy.ActContinue {
		t.Fatalf("helo: %+v", d)
	}
	if d := e.Mail(ctx, s, env.from, ""); d.Action != policy.ActContinue {
		t.Fatalf("mail: %+v", d)
	}
	_, d := e.Rcpt(ctx, s, env.rcpt, "")
	return d
}

func TestBatteryNothingRelayed(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+relayConfig)
	battery := relaytest.Battery("moat.test", "192.0.2.99")
	if len(battery) < 40 {
		t.Fatalf("battery has %d attempts, want at least 40", len(battery))
	}
	relayed := 0
	for _, a := range battery {
		t.Run(a.Note, func(t *testing.T) {
			d := run(t, e, envelope{ip: "198.51.100.7", helo: a.Helo, from: a.From, rcpt: a.Rcpt})
			if d.Action != policy.ActReject {
				relayed++
				t.Fatalf("RCPT TO:<%s> was accepted (%+v)", a.Rcpt, d)
			}
			if d.Reply.Code != 550 && d.Reply.Code != 553 {
				t.Errorf("reply %v, want 550 5.7.1 (or 553 for bad syntax)", d.Reply)
			}
			if d.Reply.Code == 550 && d.Reply.Enhanced != "5.7.1" {
				t.Errorf("reply %v, want 5.7.1", d.Reply)
			}
			if d.Check == "relay" && d.Reason == relay.ReasonPercentHack &&
				!strings.HasPrefix(d.Reply.Text, relay.PercentHackText+" (ref=") {
				t.Errorf("percent hack reply %q", d.Reply.Text)
			}
			if d.Check == "relay" && d.Reason == relay.ReasonDenied && !strings.Contains(d.Reply.Text, ">: cannot relay") {
				t.Errorf("relay denied reply %q", d.Reply.Text)
			}
		})
	}
	if relayed > 0 {
		t.Errorf("%d of %d relay attempts were accepted", relayed, len(battery))
	}
}

func TestAllowed(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+relayConfig)
	untrusted := "198.51.100.7"
	tests := []struct {
		name   string
		env    envelope
		reason string
	}{
		{"local", envelope{ip: untrusted, from: "a@remote.example", rcpt: "user@moat.test"}, "local-domain"},
		{"local upper case dot", envelope{ip: untrusted, from: "a@remote.example", rcpt: "User@MOAT.TEST."}, "local-domain"},
		{"subdomain", envelope{ip: untrusted, from: "a@remote.example", rcpt: "user@a.b.sub.moat.test"}, "local-domain"},
		{"subdomain apex", envelope{ip: untrusted, from: "a@remote.example", rcpt: "user@sub.moat.test"}, "local-domain"},
		{"listed literal", envelope{ip: untrusted, from: "a@remote.example", rcpt: "user@[192.0.2.25]"}, "local-domain"},
		{"idn as a-label", envelope{ip: untrusted, from: "a@remote.example", rcpt: "user@xn--bcher-kva.example"}, "local-domain"},
		{"idn as u-label", envelope{ip: untrusted, from: "a@remote.example", rcpt: "user@BÜCHER.example"}, "local-domain"},
		{"relay domain", envelope{ip: untrusted, from: "a@remote.example", rcpt: "user@partner.example"}, "relay-domain"},
		{"source route to local", envelope{ip: untrusted, from: "a@remote.example", rcpt: "@remote.example:user@moat.test"}, "local-domain"},
		{"unqualified", envelope{ip: untrusted, from: "a@remote.example", rcpt: "postmaster"}, "local-domain"},
		{"quoted plain local part", envelope{ip: untrusted, from: "a@remote.example", rcpt: `"john smith"@moat.test`}, "local-domain"},
		{"trusted network", envelope{ip: "10.1.2.3", from: "a@moat.test", rcpt: "x@remote.example"}, "trusted-network"},
		{"trusted network v4-mapped", envelope{ip: "::ffff:10.1.2.3", from: "a@moat.test", rcpt: "x@remote.example"}, "trusted-network"},
		{"trusted network v6", envelope{ip: "2001:db8:1::5", from: "a@moat.test", rcpt: "x@remote.example"}, "trusted-network"},
		{"trusted may use percent", envelope{ip: "10.1.2.3", from: "a@moat.test", rcpt: "x%remote.example@moat.test"}, "trusted-network"},
		{"authenticated", envelope{ip: untrusted, auth: "alice", from: "alice@moat.test", rcpt: "x@remote.example"}, "authenticated"},
		{"local submission", envelope{local: true, from: "root", rcpt: "x@remote.example"}, "trusted-network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := run(t, e, tt.env)
			if d.Action != policy.ActContinue {
				t.Fatalf("refused: %+v", d)
			}
		})
	}
	// The reasons are recorded on the recipient.
	for _, tt := range tests {
		t.Run("reason "+tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := policy.NewSession()
			if tt.env.ip != "" {
				s.ClientIP = netip.MustParseAddr(tt.env.ip)
			}
			s.Auth.Authen = tt.env.auth
			if tt.env.local {
				s.Set(policy.FactLocalSubmission, "yes")
			}
			e.Connect(ctx, s)
			e.Mail(ctx, s, tt.env.from, "")
			r, _ := e.Rcpt(ctx, s, tt.env.rcpt, "")
			f, ok := s.Finding("relay", r)
			if !ok || f.Reason != tt.reason {
				t.Errorf("relay finding %+v, want reason %q", f, tt.reason)
			}
		})
	}
}

func TestTrustedFact(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+relayConfig)
	ctx := context.Background()
	for ip, want := range map[string]string{"10.9.9.9": "yes", "198.51.100.1": ""} {
		s := policy.NewSession()
		s.ClientIP = netip.MustParseAddr(ip)
		e.Connect(ctx, s)
		if got := s.Get(policy.FactTrustedNetwork); got != want {
			t.Errorf("%s: relay/trusted = %q, want %q", ip, got, want)
		}
		// The fact lasts for the connection, across messages.
		e.Mail(ctx, s, "a@b.example", "")
		if got := s.Get(policy.FactTrustedNetwork); got != want {
			t.Errorf("%s after MAIL: relay/trusted = %q, want %q", ip, got, want)
		}
	}
}

func TestAllowedForms(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+`
[checks.relay]
local_domains = ["moat.test", "other.test"]
allow_percent_hack = true
allow_bang_paths = true
allow_quoted_routing = true
allow_authenticated = false
`)
	tests := []struct {
		rcpt string
		ok   bool
	}{
		{"user%other.test@moat.test", true},
		{"user%remote.example@moat.test", false},
		{"other.test!user@moat.test", true},
		{"remote.example!user@moat.test", false},
		{`"user@other.test"@moat.test`, true},
		{`"user@remote.example"@moat.test`, false},
		{"other.test!user%remote.example@moat.test", false},
		{"user%@moat.test", false},
	}
	for _, tt := range tests {
		t.Run(tt.rcpt, func(t *testing.T) {
			d := run(t, e, envelope{ip: "198.51.100.7", from: "a@x.example", rcpt: tt.rcpt})
			if got := d.Action == policy.ActContinue; got != tt.ok {
				t.Errorf("accepted = %v, want %v (%+v)", got, tt.ok, d)
			}
		})
	}
	// allow_authenticated = false: an authenticated client is treated like any other.
	d := run(t, e, envelope{ip: "198.51.100.7", auth: "alice", from: "a@moat.test", rcpt: "x@remote.example"})
	if d.Action != policy.ActReject {
		t.Errorf("authenticated relay with allow_authenticated = false: %+v", d)
	}
}

func TestSetupErrors(t *testing.T) {
	dir := t.TempDir()
	nets := filepath.Join(dir, "nets")
	if err := os.WriteFile(nets, []byte("10.0.0.0/8\n# comment\n300.1.1.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, toml, want string }{
		{"bad network line", `[checks.relay]
local_domains = ["a.test"]
trusted_networks_file = "` + nets + `"`, nets + ":3:"},
		{"bad domain", `[checks.relay]
local_domains = ["a.test", "bad domain.test"]`, "moat.toml:4: checks.relay.local_domains"},
		{"bad literal", `[checks.relay]
local_domains = ["[300.1.1.1]"]`, "bad address literal"},
		{"no domains", `[checks.relay]
trusted_networks = ["10.0.0.0/8"]`, "no local or relay domains"},
		{"unknown key", `[checks.relay]
local_domain = ["a.test"]`, "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := policytest.BuildError(t, policytest.Policy+tt.toml); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
