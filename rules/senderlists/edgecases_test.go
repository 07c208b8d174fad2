package senderlists_test

import (
	"strings"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

// TestUnprovableProofRefused: a white-list entry whose proof no enabled check can give could never win; it is
// refused at setup, at its file, line and key.
func TestUnprovableProofRefused(t *testing.T) {
	white := writeFile(t, "white", "friend@example.org\n# partners\npartner.example proof=dkim\n")
	tests := []struct {
		name, checks, lists, want string // want "": builds
	}{
		{"default any, no auth checks", "", `whitelist = ["trusted.example"]`,
			`moat.toml:4: checks.senderlists.whitelist: "trusted.example": senderlists: proof no enabled check can give: proof any from default_domain_proof`},
		{"pattern, no auth checks", "", `whitelist = ["*@*.trusted.example"]`, "default_domain_proof"},
		{"explicit, from a file", "[checks.spf]\n", `whitelist_file = "` + white + `"`,
			"moat.toml:5: checks.senderlists.whitelist_file: " + white + `:3: "partner.example proof=dkim": senderlists: proof no enabled check can give: proof=dkim`},
		{"spf disabled", "[checks.spf]\nenabled = false\n", `whitelist = ["trusted.example proof=spf"]`, "proof=spf"},
		{"address default changed", "", "default_address_proof = \"spf\"\nwhitelist = [\"a@trusted.example\"]", "default_address_proof"},
		{"per recipient", "", "whitelist = [\"192.0.2.1\"]\n[checks.senderlists.recipient.\"boss@moat.test\"]\nwhitelist = [\"trusted.example proof=dmarc\"]",
			`moat.toml:6: checks.senderlists.recipient.boss@moat.test.whitelist: "trusted.example proof=dmarc"`},
		{"addresses and ips need nothing", "", `whitelist = ["a@trusted.example", "192.0.2.0/24", "b.example proof=none"]`, ""},
		{"spf gives any", "[checks.spf]\n", `whitelist = ["trusted.example"]`, ""},
		{"spf gives dmarc", "[checks.spf]\n", `whitelist = ["trusted.example proof=dmarc"]`, ""},
		{"dkim gives dkim", "[checks.dkim]\n", `whitelist = ["trusted.example proof=dkim"]`, ""},
		{"black list needs no proof", "", `blacklist = ["spam.example"]`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := policytest.BuildError(t, policytest.Policy+tt.checks+"[checks.senderlists]\n"+tt.lists+"\n")
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Build: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Build error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestDuplicateRecipientTables: tables whose keys name the same recipient (keys compare like addresses) are
// refused instead of silently replacing each other.
func TestDuplicateRecipientTables(t *testing.T) {
	for _, tt := range []struct{ a, b, want string }{
		{"Boss@moat.test", "boss@MOAT.test", `moat.toml:7: checks.senderlists.recipient.boss@MOAT.test: senderlists: duplicate recipient table: recipient "boss@MOAT.test" is the same as "Boss@moat.test" (line 4)`},
		{"Sales.test", "sales.test.", `checks.senderlists.recipient.sales.test.: senderlists: duplicate recipient table`},
		{"bücher.example", "xn--bcher-kva.example", "duplicate recipient table"},
	} {
		text := policytest.Policy + "[checks.senderlists]\n" +
			"[checks.senderlists.recipient.\"" + tt.a + "\"]\nwhitelist = [\"a@one.example\"]\n\n" +
			"[checks.senderlists.recipient.\"" + tt.b + "\"]\nwhitelist = [\"b@two.example\"]\n"
		if err := policytest.BuildError(t, text); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s / %s: %v, want %q", tt.a, tt.b, err, tt.want)
		}
	}
}

// TestNullSenderEntry: "<>" on a white list must say proof=none (it white-lists every bounce), and no proof can
// hold for it.
func TestNullSenderEntry(t *testing.T) {
	for _, tt := range []struct{ list, want string }{
		{`whitelist = ["<>"]`, `moat.toml:6: checks.senderlists.whitelist: "<>": senderlists: malformed entry: the null sender cannot be proven; write "<> proof=none"`},
		{`whitelist = ["<> proof=spf"]`, "proof=spf can never hold"},
		{`whitelist = ["<> proof=any"]`, "proof=any can never hold"},
	} {
		if err := policytest.BuildError(t, policytest.Policy+authChecks+"[checks.senderlists]\n"+tt.list+"\n"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.list, err, tt.want)
		}
	}
	e := policytest.Engine(t, policytest.Policy+"[checks.test]\n[checks.senderlists]\nwhitelist = [\"<> proof=none\"]\n")
	res := tx{ip: "203.0.113.9", from: "", rcpts: []string{"a@moat.test"}}.run(t, e)
	if res.rcpt[0].Action != policy.ActContinue || !res.s.Whitelisted(res.s.Rcpts[0]) {
		t.Errorf("<> proof=none: %+v", res.rcpt[0])
	}
	// On a black list "<>" needs nothing.
	e = policytest.Engine(t, policytest.Policy+"[checks.senderlists]\nblacklist = [\"<>\"]\n")
	if res := (tx{ip: "203.0.113.9", from: "", rcpts: []string{"a@moat.test"}}).run(t, e); res.rcpt[0].Action != policy.ActReject {
		t.Errorf("black-listed <>: %+v", res.rcpt[0])
	}
}

// TestHeaderNamesFileOnly: the header that goes out with the message names the list file, not its directory on
// this server.
func TestHeaderNamesFileOnly(t *testing.T) {
	white := writeFile(t, "partners", "# partners\nfriend@example.org\n")
	e := policytest.Engine(t, policytest.Policy+"[checks.senderlists]\nwhitelist_file = \""+white+"\"\n")
	res := tx{ip: "203.0.113.9", from: "friend@example.org", rcpts: []string{"a@moat.test"}}.run(t, e)
	var hdr []string
	for _, h := range res.eom.AddHeaders {
		if h.Name == "X-Moat-Senderlist" {
			hdr = append(hdr, h.Value)
		}
	}
	if len(hdr) != 1 || !strings.Contains(hdr[0], " source=partners:2 ") || strings.Contains(hdr[0], "/") {
		t.Errorf("header %q, want one naming source=partners:2 and no directory", hdr)
	}
}
