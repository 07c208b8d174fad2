package relay

import (
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/rules/relay/relaytest"
)

// FuzzResolve checks the relay decision's invariant on any recipient: with the default (strict) settings, an
// untrusted client is allowed only a recipient without routing characters in its local part whose domain is a
// local or relay domain (or that has no domain at all).
func FuzzResolve(f *testing.F) {
	for _, a := range relaytest.Battery("moat.test", "192.0.2.99") {
		f.Add(a.Rcpt)
	}
	for _, s := range []string{"user@moat.test", "user@PARTNER.example.", "@x:user@moat.test", `"a b"@moat.test`, "postmaster"} {
		f.Add(s)
	}
	file, err := config.Parse("t.toml", []byte("[checks.relay]\nlocal_domains = [\"moat.test\", \".sub.moat.test\"]\nrelay_domains = [\"partner.example\"]\n"))
	if err != nil {
		f.Fatal(err)
	}
	sec := file.Section("checks.relay")
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		f.Fatal(err)
	}
	c, err := New(sec, cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, rcpt string) {
		a, err := addr.Parse(rcpt)
		if err != nil || a.Null() {
			return
		}
		v := c.Resolve(a)
		if !v.Allowed {
			if v.Reason == "" {
				t.Fatalf("%q refused without a reason", rcpt)
			}
			return
		}
		if strings.ContainsAny(a.Local, "%!@") {
			t.Fatalf("%q allowed with routing characters in its local part %q (%+v)", rcpt, a.Local, v)
		}
		d := a.CanonDomain()
		if a.Domain != "" && !c.local.Contains(d) && !c.relay.Contains(d) {
			t.Fatalf("%q allowed for domain %q, which is not ours (%+v)", rcpt, d, v)
		}
	})
}
