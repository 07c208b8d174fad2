package barring_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

func TestEngine(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "senders")
	if err := os.WriteFile(file, []byte("# barred senders\n*@netcom.com\n*@hotmail.com\n~friend@hotmail.com\n~boss@netcom.com\n%%%%*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := policytest.Engine(t, policytest.Policy+`
[checks.barring]
senders_file = "`+file+`"
recipients = ["*!*", '"*@*"@*', '"*@*"', "*@*%%%%*", "old-user@example.com"]
sender_text = "<{addr}>: you are not welcome here"
`)
	ctx := context.Background()
	mail := []struct {
		from   string
		reject bool
	}{
		{"x@netcom.com", true},
		{"boss@netcom.com", false},
		{"friend@hotmail.com", false},
		{"stranger@hotmail.com", true},
		{"1234abc@example.org", true},
		{"abc1234@example.org", false},
		{"", false},
	}
	for _, m := range mail {
		t.Run("mail "+m.from, func(t *testing.T) {
			s := policy.NewSession()
			d := e.Mail(ctx, s, m.from, "")
			if got := d.Action == policy.ActReject; got != m.reject {
				t.Fatalf("reject = %v, want %v (%+v)", got, m.reject, d)
			}
			if m.reject {
				if d.Reply.Code != 550 || d.Reply.Enhanced != "5.7.1" {
					t.Errorf("reply %v, want 550 5.7.1", d.Reply)
				}
				if !strings.HasPrefix(d.Reply.Text, "<"+m.from+">: you are not welcome here") {
					t.Errorf("reply text %q lacks the configured text", d.Reply.Text)
				}
				if d.Check != "barring" || d.Reason != "barred-sender" {
					t.Errorf("decided by %s/%s", d.Check, d.Reason)
				}
			}
		})
	}
	rcpt := []struct {
		to     string
		reject bool
	}{
		{"host!user@example.com", true},
		{`"user@remote"@example.com`, true},
		{`"user@remote"`, true},
		{"user@mx1234.example.com", true},
		{"old-user@EXAMPLE.COM.", true},
		{"Old-User@example.com", true}, // barring is case-insensitive throughout
		{"user@example.com", false},
	}
	for _, r := range rcpt {
		t.Run("rcpt "+r.to, func(t *testing.T) {
			s := policy.NewSession()
			e.Mail(ctx, s, "sender@example.org", "")
			_, d := e.Rcpt(ctx, s, r.to, "")
			if got := d.Action == policy.ActReject; got != r.reject {
				t.Fatalf("reject = %v, want %v (%+v)", got, r.reject, d)
			}
			if r.reject && (d.Reply.Code != 550 || d.Reply.Enhanced != "5.7.1" || !strings.Contains(d.Reply.Text, "recipient address rejected by local policy")) {
				t.Errorf("reply %v", d.Reply)
			}
		})
	}
}

func TestSetupErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("# ok\n*@ok.example\n\n*@bad example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, toml, want string
	}{
		{"bad line in file", `[checks.barring]
senders_file = "` + bad + `"`, bad + ":4:"},
		{"bad inline", `[checks.barring]
recipients = ["ok@x", "~"]`, "moat.toml:4:"},
		{"unknown key", `[checks.barring]
sender = ["x"]`, "moat.toml:4: checks.barring.sender: unknown key"},
		{"missing file", `[checks.barring]
senders_file = "/nonexistent/barred"`, "checks.barring.senders_file"},
		{"empty", `[checks.barring]
sender_text = "x"`, "no sender or recipient patterns"},
		{"multi-line text", `[checks.barring]
senders = ["a@b"]
sender_text = "a\nb"`, "checks.barring.sender_text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := policytest.BuildError(t, policytest.Policy+tt.toml); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
