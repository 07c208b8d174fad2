package greylist

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/moatmail/moat/internal/addr"
)

func TestNormalizeSender(t *testing.T) {
	tests := []struct {
		name, from, helo, want string
	}{
		{"plain", "alice@example.com", "", "alice@example.com"},
		{"upper case", "Alice.Smith@Example.COM", "", "alice.smith@example.com"},
		{"plus extension", "alice+newsletter@example.com", "", "alice@example.com"},
		{"BATV prvs", "prvs=4123a1b2c3=alice@example.com", "", "alice@example.com"},
		{"BATV prvs upper case", "PRVS=4123A1B2C3=Alice@Example.com", "", "alice@example.com"},
		{"BATV reversed", "prvs=alice=4123a1b2c3@example.com", "", "alice@example.com"},
		{"BATV Barracuda btv1", "btv1==0123c3abcdef==alice@example.com", "", "alice@example.com"},
		{"BATV msprvs1 (SparkPost)", "msprvs1=17913Z1vuaZ8v=bounces-12345@sparkpostmail.com", "", "bounces-#@sparkpostmail.com"},
		{"SRS0", "SRS0=x5Jb=2Q=example.com=alice@forwarder.example.net", "", "alice@example.com"},
		{"SRS0 plus separator", "SRS0+x5Jb=2Q=example.com=alice@forwarder.example.net", "", "alice@example.com"},
		{"SRS0 of a BATV address", "SRS0=Ab1c=TQ=example.com=prvs=4123a1b2c3=alice@fwd.example.net", "", "alice@example.com"},
		{"SRS1", "SRS1=Hq4x=fwd1.example.net==x5Jb=2Q=example.com=alice@fwd2.example.org", "", "alice@example.com"},
		{"SRS0 with dashes (postsrsd)", "SRS0-x5Jb=2Q=example.com=bob@fwd.example.net", "", "bob@example.com"},
		{"Mailman VERP", "python-list-bounces+alice=example.com@python.org", "", "python-list-bounces@python.org"},
		{"ezmlm VERP", "dev-return-1234-alice=example.com@lists.example.org", "", "dev-return-#@lists.example.org"},
		{"Mailchimp", "bounce-mc.us5_12345678.901234-alice=example.com@mail12.suw13.mcsv.net", "", "bounce-mc.us5_#.#@mail12.suw13.mcsv.net"},
		{"Amazon SES", "0100018c2f1d3e4b-5f6a7b8c-1d2e-4f3a-9b8c-7d6e5f4a3b2c-000000@amazonses.com", "", "#-#-#-#-#-#-#@amazonses.com"},
		{"SendGrid", "bounces+1234567-abcd-alice=example.com@em123.example.com", "", "bounces@em123.example.com"},
		{"Mailgun", "bounce+1a2b3c.4d5e6f-alice=example.com@mg.example.com", "", "bounce@mg.example.com"},
		{"Google Groups", "listname+bncBDX4Z2ZTKMHBB4FQ@googlegroups.com", "", "listname@googlegroups.com"},
		{"Facebook", "notification+zrdohvri=vd1@facebookmail.com", "", "notification@facebookmail.com"},
		{"Salesforce Marketing Cloud", "bounce-12_HTML-123456789-123456-1234567-1@bounce.email.example.com", "", "bounce-#_html-#-#-#-#@bounce.email.example.com"},
		{"Mailman upper case", "List-Bounces+Alice=Example.COM@Lists.Example.ORG", "", "list-bounces@lists.example.org"},
		{"short names kept", "user1@example.com", "", "user1@example.com"},
		{"no domain", "Postmaster", "", "postmaster"},
		{"null sender", "", "Mail.Example.COM.", "<>@mail.example.com"},
		{"null sender, hostile helo", "<>", "a b\tc", "<>@a_b_c"},
		{"not SRS", "srs0@example.com", "", "srs0@example.com"},
		{"broken SRS kept", "SRS0=abc@example.com", "", "srs0=abc@example.com"},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		if seen[tc.name] {
			t.Fatalf("duplicate case %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			a, err := addr.Parse(tc.from)
			if err != nil {
				t.Fatal(err)
			}
			if got := NormalizeSender(a, tc.helo); got != tc.want {
				t.Errorf("NormalizeSender(%q) = %q, want %q", tc.from, got, tc.want)
			}
		})
	}
}

// TestNormalizeStable: two messages of the same real sender give the same key, two different senders do not.
func TestNormalizeStable(t *testing.T) {
	same := [][2]string{
		{"prvs=4123a1b2c3=alice@example.com", "prvs=5234f0e1d2=alice@example.com"},
		{"SRS0=x5Jb=2Q=example.com=alice@fwd.example.net", "SRS0=Zz9q=2R=example.com=alice@fwd.example.net"},
		{"dev-return-1234-alice=example.com@lists.example.org", "dev-return-1299-bob=example.net@lists.example.org"},
		{"bounces+1234567-abcd-alice=example.com@em1.example.com", "bounces+7654321-ef01-carol=example.org@em1.example.com"},
	}
	for _, p := range same {
		a, _ := addr.Parse(p[0])
		b, _ := addr.Parse(p[1])
		if NormalizeSender(a, "") != NormalizeSender(b, "") {
			t.Errorf("%q and %q differ: %q vs %q", p[0], p[1], NormalizeSender(a, ""), NormalizeSender(b, ""))
		}
	}
	a, _ := addr.Parse("alice@example.com")
	b, _ := addr.Parse("bob@example.com")
	if NormalizeSender(a, "") == NormalizeSender(b, "") {
		t.Error("alice and bob normalise to the same key")
	}
}

func TestClientKey(t *testing.T) {
	tests := []struct {
		ip     string
		v4, v6 int
		spf    string
		want   string
	}{
		{"192.0.2.77", 24, 64, "", "192.0.2.0/24"},
		{"192.0.2.77", 32, 64, "", "192.0.2.77/32"},
		{"198.51.100.200", 16, 64, "", "198.51.0.0/16"},
		{"2001:db8:1:2:3:4:5:6", 24, 64, "", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 24, 48, "", "2001:db8:1::/48"},
		{"::ffff:192.0.2.77", 24, 64, "", "192.0.2.0/24"},
		{"192.0.2.77", 24, 64, "Mail.Example.COM.", "spf:mail.example.com"},
	}
	for _, tc := range tests {
		if got := ClientKey(netip.MustParseAddr(tc.ip), tc.v4, tc.v6, tc.spf); got != tc.want {
			t.Errorf("ClientKey(%s, %d, %d, %q) = %q, want %q", tc.ip, tc.v4, tc.v6, tc.spf, got, tc.want)
		}
	}
}

func FuzzNormalizeSender(f *testing.F) {
	for _, s := range []string{"alice@example.com", "prvs=4123a1b2c3=a@b", "SRS1=a=b==c=d=e=f@g", "btv1==x==", "a+b=c-d@e",
		"SRS0=", "srs1=x==", "prvs==@x", "=@x"} {
		f.Add(s, "helo.example")
	}
	f.Fuzz(func(t *testing.T, from, helo string) {
		a, err := addr.Parse(from)
		if err != nil {
			return
		}
		got := NormalizeSender(a, helo)
		if got != strings.ToLower(got) {
			t.Fatalf("not lower case: %q", got)
		}
		if strings.ContainsAny(got, "\r\n\x00") {
			t.Fatalf("control character in %q", got)
		}
	})
}
