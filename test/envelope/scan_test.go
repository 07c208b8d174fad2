package envelope

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/test/stack"
)

// scanResult is the part of `moat scan`'s JSON report the tests read.
type scanResult struct {
	Action       string `json:"action"`
	SMTPCode     int    `json:"smtp_code"`
	SMTPText     string `json:"smtp_text"`
	Stage        string `json:"stage"`
	Reason       string `json:"reason"`
	HeadersAdded []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"headers_added"`
	Checks []struct {
		Name    string `json:"name"`
		Verdict string `json:"verdict"`
		Detail  string `json:"detail"`
	} `json:"checks"`
}

// TestMoatScan runs each envelope behaviour through `moat scan`, the offline path an administrator uses to
// try a configuration: the same checks and answers as through Postfix.
func TestMoatScan(t *testing.T) {
	bin := stack.BuildMoat(t)
	dir := stack.TempDir(t, "envelope-scan")
	conf := filepath.Join(dir, "moat.toml")
	if err := os.WriteFile(conf, []byte(moatConfig(dir, filepath.Join(dir, "moat.sock"))), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		args      []string
		action    string
		code      int
		text      string // prefix of smtp_text
		stage     string
		header    string // a header moat adds, "Name: value-substring"
		checkNote string // a check detail substring
	}{
		{"relay denied", []string{"--ip", "203.0.113.5", "--from", "a@remote.example", "--rcpt", "victim@remote.example"},
			"reject", 550, "5.7.1 <victim@remote.example>: cannot relay", "rcpt", "", ""},
		{"unqualified recipient", []string{"--ip", "198.51.100.1", "--from", "a@remote.example", "--rcpt", "nobody"},
			"reject", 550, "5.7.1 <nobody>: need fully-qualified address", "rcpt", "", ""},
		{"no client ip is not trusted", []string{"--ip", "", "--from", "a@remote.example", "--rcpt", "victim@remote.example"},
			"reject", 550, "5.7.1 <victim@remote.example>: cannot relay", "rcpt", "", ""},
		{"percent hack", []string{"--ip", "203.0.113.5", "--from", "a@remote.example", "--rcpt", "victim%remote.example@moat.test"},
			"reject", 550, "5.7.1 forwarding percent hack is not permitted", "rcpt", "", ""},
		{"quoted routing", []string{"--ip", "203.0.113.5", "--from", "a@remote.example", "--rcpt", `"victim@remote.example"@moat.test`},
			"reject", 550, `5.7.1 <"victim@remote.example"@moat.test>: cannot relay`, "rcpt", "", ""},
		{"trusted network relays", []string{"--ip", trustedIP, "--from", "user@moat.test", "--rcpt", "victim@remote.example"},
			"accept", 250, "2.0.0", "", "", "may relay"},
		{"authenticated over tls relays", []string{"--ip", "203.0.113.5", "--auth", "alice", "--tls", "--from", "alice@moat.test", "--rcpt", "victim@remote.example"},
			"accept", 250, "2.0.0", "", "X-Moat: auth=alice", "authenticated as alice"},
		{"authenticated without tls", []string{"--ip", "203.0.113.5", "--auth", "alice", "--from", "alice@moat.test", "--rcpt", "victim@remote.example"},
			"reject", 530, "5.7.0 Must issue a STARTTLS command first", "mail", "", ""},
		{"recipient unknown", []string{"--ip", "203.0.113.5", "--from", "a@remote.example", "--rcpt", "nobody@moat.test"},
			"reject", 550, "5.1.1 <nobody@moat.test>: recipient unknown", "rcpt", "", ""},
		{"recipient disabled", []string{"--ip", "203.0.113.5", "--from", "a@remote.example", "--rcpt", "disabled@moat.test"},
			"reject", 550, "5.1.1 <disabled@moat.test>: recipient unknown", "rcpt", "", ""},
		{"barred sender", []string{"--ip", "203.0.113.5", "--from", "x@barred.example", "--rcpt", mailbox},
			"reject", 550, "5.7.1 <x@barred.example>: sender barred by the envelope test", "mail", "", ""},
		{"barred recipient", []string{"--ip", "203.0.113.5", "--from", "a@remote.example", "--rcpt", "1234abc@moat.test"},
			"reject", 550, "5.7.1 <1234abc@moat.test>: recipient barred by the envelope test", "rcpt", "", ""},
		{"black list", []string{"--ip", "203.0.113.5", "--from", "x@black.example", "--rcpt", mailbox},
			"reject", 550, "5.7.1 <x@black.example>: sender rejected by local policy", "rcpt", "", ""},
		{"white list wins", []string{"--ip", "203.0.113.5", "--from", "friend@white.example", "--rcpt", mailbox},
			"accept", 250, "2.0.0", "", `X-Moat-Senderlist: whitelist entry="friend@white.example"`, ""},
		{"tls required for sender domain", []string{"--ip", "203.0.113.5", "--from", "ceo@secure.example", "--rcpt", mailbox},
			"reject", 530, "5.7.0 Must issue a STARTTLS command first", "mail", "", ""},
		{"tls required, with tls", []string{"--ip", "203.0.113.5", "--tls", "--from", "ceo@secure.example", "--rcpt", mailbox},
			"accept", 250, "2.0.0", "", "X-Moat: tls=TLSv1.3", ""},
	}
	msgFile := filepath.Join(dir, "msg.eml")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := tt.args[len(tt.args)-3]
			if err := os.WriteFile(msgFile, message(from, mailbox, "scan", "hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"scan", "-c", conf}, tt.args...)
			cmd := exec.Command(bin, append(args, msgFile)...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("moat %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
			}
			var r scanResult
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("report: %v\n%s", err, out)
			}
			if r.Action != tt.action || r.SMTPCode != tt.code || !strings.HasPrefix(r.SMTPText, tt.text) {
				t.Errorf("got %s %d %q, want %s %d %q…\n%s", r.Action, r.SMTPCode, r.SMTPText, tt.action, tt.code, tt.text, out)
			}
			if tt.stage != "" && r.Stage != tt.stage {
				t.Errorf("stage %q, want %q", r.Stage, tt.stage)
			}
			if tt.header != "" {
				name, val, _ := strings.Cut(tt.header, ": ")
				found := false
				for _, h := range r.HeadersAdded {
					found = found || (h.Name == name && strings.Contains(h.Value, val))
				}
				if !found {
					t.Errorf("no header %q in %s", tt.header, out)
				}
			}
			if tt.checkNote != "" && !strings.Contains(string(out), tt.checkNote) {
				t.Errorf("no check detail %q in %s", tt.checkNote, out)
			}
		})
	}
}
