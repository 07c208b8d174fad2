package addr

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		raw                 string
		local, domain, rout string
		quoted, null        bool
		bad                 bool
	}{
		{raw: "User@Example.COM.", local: "User", domain: "example.com"},
		{raw: "<a@b.test>", local: "a", domain: "b.test"},
		{raw: "", null: true},
		{raw: "<>", null: true},
		{raw: "postmaster", local: "postmaster"},
		{raw: `"john doe"@example.test`, local: "john doe", domain: "example.test", quoted: true},
		{raw: `"user@remote"@local.test`, local: "user@remote", domain: "local.test", quoted: true},
		{raw: "@hop.test,@hop2.test:user@remote.test", local: "user", domain: "remote.test", rout: "@hop.test,@hop2.test"},
		{raw: "user%remote.test@local.test", local: "user%remote.test", domain: "local.test"},
		{raw: "host!user@local.test", local: "host!user", domain: "local.test"},
		{raw: "u@[192.0.2.1]", local: "u", domain: "[192.0.2.1]"},
		{raw: "user@remote@local.test", bad: true},
		{raw: "a b@c.test", bad: true},
		{raw: `"unterminated@c.test`, bad: true},
		{raw: "@hop.test", bad: true},
		{raw: "a@", bad: true},
		{raw: "@x.test", bad: true},
		{raw: "a\r\nb@c.test", bad: true},
		{raw: strings.Repeat("a", 2000) + "@c.test", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			a, err := Parse(tt.raw)
			if tt.bad {
				if err == nil {
					t.Fatalf("Parse(%q) = %+v, want an error", tt.raw, a)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Local != tt.local || a.Domain != tt.domain || a.Route != tt.rout || a.Quoted != tt.quoted || a.Null() != tt.null {
				t.Errorf("got %+v null=%v", a, a.Null())
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"a@b", `"x@y"@z`, "@a,@b:c@d", "", "<>", "a%b@c", "a!b@c", "[1.2.3.4]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		if !a.Null() && a.Local == "" {
			t.Errorf("accepted %q with an empty local part", s)
		}
		if a.Domain != strings.ToLower(a.Domain) {
			t.Errorf("domain not lower case: %q", a.Domain)
		}
	})
}
