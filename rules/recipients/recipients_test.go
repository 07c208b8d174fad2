package recipients_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	_ "github.com/moatmail/moat/rules/recipients"
)

func rcpt(t *testing.T, e *policy.Engine, to string) (policy.Decision, *policy.Session, *policy.Recipient) {
	t.Helper()
	ctx := context.Background()
	s := policy.NewSession()
	e.Mail(ctx, s, "sender@remote.example", "")
	r, d := e.Rcpt(ctx, s, to, "")
	return d, s, r
}

func writeList(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "recipients")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRecipients(t *testing.T) {
	file := writeList(t, `# users
alice@example.com
Bob.Smith@Example.COM
!old@example.com
@catchall.example
!gone@catchall.example
"john doe"@example.com
`)
	tests := []struct {
		name, config, to string
		ok               bool
	}{
		{"listed", "", "alice@example.com", true},
		{"domain case", "", "alice@EXAMPLE.COM.", true},
		{"local case matters", "", "Alice@example.com", false},
		{"local case as listed", "", "Bob.Smith@example.com", true},
		{"local case as listed, lower", "", "bob.smith@example.com", false},
		{"unknown", "", "mallory@example.com", false},
		{"disabled", "", "old@example.com", false},
		{"catch-all", "", "anything@catchall.example", true},
		{"catch-all disabled account", "", "gone@catchall.example", false},
		{"quoted local part", "", `"john doe"@example.com`, true},
		{"postmaster", "", "PostMaster@example.com", true},
		{"not local: not checked", "", "someone@remote.example", true},
		{"extension not stripped by default", "", "alice+news@example.com", false},
		{"extension stripped", "extension_separator = \"+\"\n", "alice+news@example.com", true},
		{"extension of a disabled account", "extension_separator = \"+\"\n", "old+x@example.com", false},
		{"extension of unknown", "extension_separator = \"+\"\n", "eve+x@example.com", false},
		{"case-insensitive", "case_sensitive_local = false\n", "ALICE@example.com", true},
		{"case-insensitive disabled", "case_sensitive_local = false\n", "OLD@example.com", false},
		{"local_domains widens the check", "local_domains = [\"example.com\", \"other.example\"]\n", "x@other.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := policytest.Engine(t, policytest.Policy+"[checks.recipients]\naddresses_file = \""+file+"\"\n"+tt.config)
			d, _, _ := rcpt(t, e, tt.to)
			if got := d.Action == policy.ActContinue; got != tt.ok {
				t.Fatalf("accepted = %v, want %v (%+v)", got, tt.ok, d)
			}
			if !tt.ok {
				want := "<" + tt.to + ">: recipient unknown (ref="
				if d.Reply.Code != 550 || d.Reply.Enhanced != "5.1.1" || !strings.HasPrefix(d.Reply.Text, want) {
					t.Errorf("reply %v, want 550 5.1.1 %s…", d.Reply, want)
				}
			}
		})
	}
}

func TestReloadReadsTheFileAgain(t *testing.T) {
	file := writeList(t, "alice@example.com\n")
	toml := "[checks.recipients]\naddresses_file = \"" + file + "\"\n"
	if d, _, _ := rcpt(t, policytest.Engine(t, policytest.Policy+toml), "carol@example.com"); d.Action != policy.ActReject {
		t.Fatalf("carol before the change: %+v", d)
	}
	if err := os.WriteFile(file, []byte("alice@example.com\ncarol@example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A reload (SIGHUP) builds a new engine from the configuration.
	if d, _, _ := rcpt(t, policytest.Engine(t, policytest.Policy+toml), "carol@example.com"); d.Action != policy.ActContinue {
		t.Fatalf("carol after the change: %+v", d)
	}
}

func TestSetupErrors(t *testing.T) {
	bad := writeList(t, "alice@example.com\n\n!@example.org\n")
	tests := []struct{ name, toml, want string }{
		{"disabled catch-all", `addresses_file = "` + bad + `"`, bad + ":3:"},
		{"no domain", `addresses = ["alice"]`, "want local@domain"},
		{"empty", `case_sensitive_local = true`, "no addresses"},
		{"separator", `addresses = ["a@b.example"]
extension_separator = "++"`, "checks.recipients.extension_separator"},
		{"bad local domain", `addresses = ["a@b.example"]
local_domains = ["bad domain"]`, "checks.recipients.local_domains"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := policytest.BuildError(t, policytest.Policy+"[checks.recipients]\n"+tt.toml+"\n"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
