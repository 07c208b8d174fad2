package barring_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/barring"
)

func lines(src string, texts ...string) []config.ListLine {
	out := make([]config.ListLine, len(texts))
	for i, t := range texts {
		out[i] = config.ListLine{Text: t, Source: src, Line: i + 1}
	}
	return out
}

func TestListLastMatchDecides(t *testing.T) {
	l, err := barring.ParseList(lines("list", "*@netcom.com", "*@hotmail.com", "~friend@hotmail.com", "~boss@netcom.com"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr     string
		want     bool
		wantLine int // 0: no line matched
	}{
		{"anyone@netcom.com", true, 1},
		{"someone@HOTMAIL.com", true, 2},
		{"friend@hotmail.com", false, 3},
		{"Friend@Hotmail.Com", false, 3},
		{"boss@netcom.com", false, 4},
		{"boss@hotmail.com", true, 2},
		{"friend@netcom.com", true, 1},
		{"friend@example.org", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			got, rule := l.Match(barring.NewSubject(tt.addr))
			if got != tt.want {
				t.Errorf("barred = %v, want %v", got, tt.want)
			}
			line := 0
			if rule != nil {
				line = rule.Line.Line
			}
			if line != tt.wantLine {
				t.Errorf("decided by line %d, want %d", line, tt.wantLine)
			}
		})
	}
	// A later plain line bars again after an exclusion.
	l2, err := barring.ParseList(lines("list", "*@hotmail.com", "~friend@hotmail.com", "f*@hotmail.com"))
	if err != nil {
		t.Fatal(err)
	}
	if barred, _ := l2.Match(barring.NewSubject("friend@hotmail.com")); !barred {
		t.Error("friend@hotmail.com: the last matching line bars it, got not barred")
	}
}

func TestParseListNamesFileAndLine(t *testing.T) {
	_, err := barring.ParseList(lines("/etc/moat/barred", "*@ok.example", "~", "x@y"))
	if err == nil {
		t.Fatal("want an error for a lone '~'")
	}
	if !strings.Contains(err.Error(), "/etc/moat/barred:2:") {
		t.Errorf("error %q does not name the file and line", err)
	}
}

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
