package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moatmail/moat/test/stack"
)

// The wiring guide's MTA settings and its scanner checks are run here as written, so that the guide cannot
// drift from what works.

func wiringGuide(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stack.RepoRoot(t), "docs", "wiring.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// codeBlocks returns the fenced code blocks of a markdown text, with their indentation removed.
func codeBlocks(md string) []string {
	var blocks []string
	var cur *strings.Builder
	indent := ""
	for _, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if strings.HasPrefix(trimmed, "```") {
			if cur == nil {
				cur, indent = &strings.Builder{}, line[:len(line)-len(trimmed)]
				continue
			}
			blocks = append(blocks, cur.String())
			cur = nil
			continue
		}
		if cur != nil {
			cur.WriteString(strings.TrimPrefix(line, indent) + "\n")
		}
	}
	return blocks
}

// TestWiringGuidePostfix runs Postfix with the guide's main.cf milter settings (the socket path aside).
func TestWiringGuidePostfix(t *testing.T) {
	var settings map[string]string
	for _, b := range codeBlocks(wiringGuide(t)) {
		if strings.HasPrefix(b, "smtpd_milters =") {
			settings = map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(b), "\n") {
				k, v, ok := strings.Cut(line, "=")
				if !ok {
					t.Fatalf("main.cf line %q", line)
				}
				settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
	}
	for _, k := range []string{"smtpd_milters", "milter_protocol", "milter_default_action", "milter_command_timeout", "milter_content_timeout"} {
		if settings[k] == "" {
			t.Fatalf("the guide's main.cf block lacks %s: %v", k, settings)
		}
	}
	m := startMoat(t)
	settings["smtpd_milters"] = "unix:" + m.sock // the test Postfix does not run chrooted
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + m.sock, Mailboxes: mailboxes, ExtraMain: settings})
	assertCore(t, m, pf.Addr, pf)
}

// TestWiringGuideSendmail runs Sendmail with the guide's INPUT_MAIL_FILTER line: its socket form, F= and T=.
func TestWiringGuideSendmail(t *testing.T) {
	re := regexp.MustCompile("INPUT_MAIL_FILTER\\(`moat', `S=(local|unix):(\\S+), F=(\\w*), T=([^']+)'\\)dnl")
	match := re.FindStringSubmatch(wiringGuide(t))
	if match == nil {
		t.Fatal("the guide has no INPUT_MAIL_FILTER line for a unix socket")
	}
	m := startMoat(t)
	sm := stack.StartSendmail(t, stack.SendmailOptions{Milter: match[1] + ":" + m.sock, MilterFlags: match[3],
		MilterTimeouts: match[4], LocalDomains: []string{"example.test"}})
	if cf, err := os.ReadFile(sm.CF); err != nil || !strings.Contains(string(cf), "F="+match[3]+", T="+match[4]) {
		t.Fatalf("sendmail.cf does not carry the guide's F= and T=: %v", err)
	}
	assertCore(t, m, sm.Addr, sm)
}

// TestWiringGuideScannerChecks runs the guide's EICAR and GTUBE commands against real clamd and spamd.
func TestWiringGuideScannerChecks(t *testing.T) {
	guide := wiringGuide(t)
	clamd := stack.StartClamd(t, stack.ClamdOptions{})
	spamd := stack.StartSpamd(t)
	dir := stack.TempDir(t, "wiring-scan")
	conf := filepath.Join(dir, "moat.toml")
	body := fmt.Sprintf(`[checks.relay]
local_domains = ["example.com"]
trusted_networks = ["127.0.0.0/8", "::1/128"]
[checks.greylist]
[store]
path = "moat.db"
[checks.clamd]
servers = ["unix:%s"]
[checks.spamd]
servers = ["tcp:%s"]
[policy]
authserv_id = "mx.example.com"
tag_score = 5.0
reject_score = 15.0
`, clamd.Socket, spamd.Addr)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := stack.BuildMoat(t)
	for _, tt := range []struct{ file, check, reason string }{
		{"eicar.eml", "clamd", "clamd/"},
		{"gtube.eml", "spamd", "policy/reject_score"},
	} {
		t.Run(tt.check, func(t *testing.T) {
			// The guide's printf line that writes the message file, run as written.
			var script string
			for _, b := range codeBlocks(guide) {
				if strings.Contains(b, "> "+tt.file) {
					script = b[:strings.Index(b, "> "+tt.file)+len("> "+tt.file)]
				}
			}
			if script == "" {
				t.Fatalf("the guide does not write %s", tt.file)
			}
			sh := exec.Command("sh", "-c", script)
			sh.Dir = dir
			if out, err := sh.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", script, err, out)
			}
			// The guide's check: moat scan --exit-code FILE, with the default --ip.
			if !strings.Contains(guide, "moat scan --exit-code "+tt.file) {
				t.Fatalf("the guide does not check %s with moat scan --exit-code", tt.file)
			}
			cmd := exec.Command(bin, "scan", "-c", conf, "--exit-code", tt.file)
			cmd.Dir = dir
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			var rep struct {
				Action string `json:"action"`
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
				t.Fatalf("not JSON (%v): %s %s", err, out.String(), errb.String())
			}
			if code != 1 || rep.Action != "reject" || !strings.HasPrefix(rep.Reason, tt.reason) {
				t.Fatalf("exit %d, action %s, reason %s; want 1, reject, %s…\n%s%s", code, rep.Action, rep.Reason, tt.reason, out.String(), errb.String())
			}
		})
	}
}
