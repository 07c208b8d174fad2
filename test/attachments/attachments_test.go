// Package attachments holds the end-to-end tests of attachment barring: the corpus of
// rules/attachments/attachtest through `moat scan` (the real binary), and one set through real Postfix:
//
//	SendMail -> Postfix smtpd (127.0.0.1) -> moat (unix socket milter, [checks.attachments])
//	                    |
//	                    +-> virtual(8) -> Maildir of bob@example.net, read back by the test
//
// With CI=true a missing Postfix or missing clamav-testfiles samples fail the test.
package attachments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/rules/attachments/attachtest"
	"github.com/moatmail/moat/test/stack"
)

type scanResult struct {
	Action       string `json:"action"`
	SMTPCode     int    `json:"smtp_code"`
	SMTPText     string `json:"smtp_text"`
	Ref          string `json:"ref"`
	HeadersAdded []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"headers_added"`
	Checks []struct {
		Name    string `json:"name"`
		Result  string `json:"result"`
		Verdict string `json:"verdict"`
		Reason  string `json:"reason"`
		Detail  string `json:"detail"`
	} `json:"checks"`
}

var refRE = regexp.MustCompile(`\(ref=[A-Z2-7]{12}\)$`)

func writeConfig(t testing.TB, dir, extra string) string {
	t.Helper()
	conf := filepath.Join(dir, "moat.toml")
	body := fmt.Sprintf(`[milter]
listen = ["unix:%s"]
socket_mode = "0666"
spool_dir = %q

[log]
level = "info"

[policy]
authserv_id = "mx.moat.test"

%s
%s`, filepath.Join(dir, "moat.sock"), dir, attachtest.Config, extra)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

func scan(t *testing.T, bin, conf string, msg []byte, args ...string) scanResult {
	t.Helper()
	file := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(file, msg, 0o644); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"scan", "-c", conf, "--ip", "203.0.113.9", "--from", attachtest.Sender, "--rcpt", attachtest.Rcpt}, args...)
	out, err := exec.Command(bin, append(argv, file)...).Output()
	var res scanResult
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		t.Fatalf("moat scan: %v, output not JSON (%v):\n%s", err, jerr, out)
	}
	return res
}

// attachmentFindings returns the check's findings as "result reason".
func attachmentFindings(res scanResult) []string {
	var out []string
	for _, c := range res.Checks {
		if c.Name == "attachments" {
			out = append(out, c.Result+" "+c.Reason)
		}
	}
	return out
}

func traceHeader(res scanResult) string {
	for _, h := range res.HeadersAdded {
		if h.Name == "X-Moat" {
			return h.Value
		}
	}
	return ""
}

func corpus(t *testing.T) []attachtest.Case {
	t.Helper()
	cases, missing := attachtest.Corpus(attachtest.TestFiles)
	if len(missing) > 0 {
		if stack.InCI() {
			t.Fatalf("clamav-testfiles samples missing: %v", missing)
		}
		t.Logf("clamav-testfiles samples missing, not tested: %v", missing)
	}
	return cases
}

// TestScanCorpus runs every corpus message through `moat scan` and checks the verdict, the reply and that
// the finding naming part, name and rule is in X-Moat (accepted mail) or the reply (refused mail).
func TestScanCorpus(t *testing.T) {
	bin := stack.BuildMoat(t)
	conf := writeConfig(t, stack.TempDir(t, "attachments-scan"), "")
	for _, tc := range corpus(t) {
		t.Run(tc.Name, func(t *testing.T) {
			res := scan(t, bin, conf, tc.Message)
			fs := attachmentFindings(res)
			if res.Action != tc.Action {
				t.Fatalf("action %s (%d %s), want %s; findings %q", res.Action, res.SMTPCode, res.SMTPText, tc.Action, fs)
			}
			found := false
			for _, f := range fs {
				if tc.Reason == "" && f == "clean " {
					found = true
				}
				if tc.Reason != "" && strings.Contains(f, tc.Reason+":") {
					found = true
				}
			}
			if !found {
				t.Fatalf("no %q finding: %q", tc.Reason, fs)
			}
			switch tc.Action {
			case "reject":
				if res.SMTPCode != tc.Code || !strings.HasPrefix(res.SMTPText, "5.7.1 ") || !strings.Contains(res.SMTPText, "not allowed") ||
					!refRE.MatchString(res.SMTPText) || !strings.Contains(res.SMTPText, res.Ref) {
					t.Fatalf("reply %d %q", res.SMTPCode, res.SMTPText)
				}
			case "accept":
				trace := traceHeader(res)
				want := "attachments:clean"
				if tc.Reason != "" {
					want = "attachments:" + tc.Reason + ":2" // kind:part…
					if tc.Reason == "malformed-mime" {
						want = "attachments:malformed-mime:message"
					}
				}
				if !strings.Contains(trace, want) {
					t.Fatalf("X-Moat %q lacks %q", trace, want)
				}
			}
		})
	}
}

// TestScanPolicy covers what the configuration changes: malformed mail refused with 554 5.6.0, white-listed
// senders checked unless whitelisted_exempt, and per-recipient-domain overrides (the strictest applies).
func TestScanPolicy(t *testing.T) {
	bin := stack.BuildMoat(t)
	dir := stack.TempDir(t, "attachments-policy")
	exe := attachtest.Message("exe", attachtest.Attachment{Header: attachtest.Named("application/octet-stream", "setup.exe"), Data: attachtest.PE()})
	iso := attachtest.Message("iso", attachtest.Attachment{Header: attachtest.Named("application/octet-stream", "disk.iso"), Data: []byte("CD001")})

	t.Run("malformed rejected with 5.6.0", func(t *testing.T) {
		conf := writeConfig(t, t.TempDir(), "")
		raw, _ := os.ReadFile(conf)
		os.WriteFile(conf, []byte(strings.Replace(string(raw), "[checks.attachments]\n", "[checks.attachments]\nmalformed = \"reject\"\n", 1)), 0o644)
		msg := []byte("From: <a@example.org>\r\nTo: <bob@example.net>\r\nSubject: x\r\nContent-Type: multipart/mixed\r\n\r\nbody\r\n")
		res := scan(t, bin, conf, msg)
		if res.SMTPCode != 554 || !strings.HasPrefix(res.SMTPText, "5.6.0 Malformed MIME structure") || !refRE.MatchString(res.SMTPText) {
			t.Fatalf("%d %q", res.SMTPCode, res.SMTPText)
		}
	})
	t.Run("white-listed sender still checked", func(t *testing.T) {
		conf := writeConfig(t, t.TempDir(), "[checks.senderlists]\nwhitelist = [\"alice@example.org\"]\n")
		res := scan(t, bin, conf, exe)
		if res.Action != "reject" {
			t.Fatalf("white-listed sender's exe: %s %q", res.Action, res.SMTPText)
		}
		dir := t.TempDir()
		conf = writeConfig(t, dir, "[checks.senderlists]\nwhitelist = [\"alice@example.org\"]\n")
		raw, _ := os.ReadFile(conf)
		os.WriteFile(conf, []byte(strings.Replace(string(raw), "[checks.attachments]\n", "[checks.attachments]\nwhitelisted_exempt = true\n", 1)), 0o644)
		res = scan(t, bin, conf, exe)
		if res.Action != "accept" {
			t.Fatalf("whitelisted_exempt: %s %q", res.Action, res.SMTPText)
		}
		for _, f := range attachmentFindings(res) {
			t.Fatalf("whitelisted_exempt ran the check: %q", f)
		}
	})
	t.Run("domain override", func(t *testing.T) {
		conf := writeConfig(t, dir, `
[[checks.attachments.domain]]
domains = ["lab.example"]
names = ["~*.iso"]
names_action = "quarantine"

[[checks.attachments.domain]]
domains = [".strict.example"]
names = ["*.txt"]
`)
		if res := scan(t, bin, conf, iso); res.Action != "reject" {
			t.Fatalf("iso to the default domain: %s", res.Action)
		}
		if res := scan(t, bin, conf, iso, "--rcpt", "x@lab.example"); res.Action != "reject" {
			t.Fatalf("iso to a default and a lab recipient: %s (the strictest applies)", res.Action)
		}
		lab := []string{"--rcpt", "x@lab.example"}
		res := scanOnly(t, bin, conf, iso, lab)
		if res.Action != "accept" {
			t.Fatalf("iso to lab.example only: %s %q", res.Action, attachmentFindings(res))
		}
		bat := attachtest.Message("bat", attachtest.Attachment{Header: attachtest.Named("text/plain", "run.bat"), Data: []byte("@echo off\r\n")})
		if res := scanOnly(t, bin, conf, bat, lab); res.Action != "quarantine" {
			t.Fatalf("bat to lab.example (names_action quarantine): %s", res.Action)
		}
		if res := scanOnly(t, bin, conf, exe, lab); res.Action != "reject" {
			t.Fatalf("exe to lab.example (sniffed type, types_action reject): %s", res.Action)
		}
		txt := attachtest.Message("txt", attachtest.Attachment{Header: attachtest.Named("text/plain", "notes.txt"), Data: []byte("notes")})
		if res := scanOnly(t, bin, conf, txt, []string{"--rcpt", "y@mx.strict.example"}); res.Action != "reject" {
			t.Fatalf("txt to a subdomain of strict.example: %s", res.Action)
		}
		if res := scanOnly(t, bin, conf, txt, lab); res.Action != "accept" {
			t.Fatalf("txt to lab.example: %s", res.Action)
		}
	})
	t.Run("config errors name file, line and key", func(t *testing.T) {
		conf := writeConfig(t, t.TempDir(), "")
		raw, _ := os.ReadFile(conf)
		os.WriteFile(conf, []byte(strings.Replace(string(raw), "macros = \"quarantine\"", "macros = \"strip\"", 1)), 0o644)
		out, err := exec.Command(bin, "check-config", "-c", conf).CombinedOutput()
		if err == nil || !regexp.MustCompile(`moat\.toml:\d+: checks\.attachments\.macros: .*"strip"`).Match(out) {
			t.Fatalf("check-config: %v\n%s", err, out)
		}
	})
}

// scanOnly scans with only the given recipients (not the corpus recipient).
func scanOnly(t *testing.T, bin, conf string, msg []byte, rcpts []string) scanResult {
	t.Helper()
	file := filepath.Join(t.TempDir(), "msg.eml")
	os.WriteFile(file, msg, 0o644)
	argv := append([]string{"scan", "-c", conf, "--ip", "203.0.113.9", "--from", attachtest.Sender}, rcpts...)
	out, err := exec.Command(bin, append(argv, file)...).Output()
	var res scanResult
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		t.Fatalf("moat scan: %v, output not JSON (%v):\n%s", err, jerr, out)
	}
	return res
}

// TestThroughPostfix sends one set of the corpus through real Postfix with moat as its milter.
func TestThroughPostfix(t *testing.T) {
	stack.Need(t, "postfix")
	dir := stack.TempDir(t, "attachments-postfix")
	conf := writeConfig(t, dir, "")
	sock := filepath.Join(dir, "moat.sock")
	moat := stack.StartMoat(t, conf, "unix:"+sock)
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + sock, Mailboxes: []string{attachtest.Rcpt}})
	byName := map[string]attachtest.Case{}
	for _, c := range corpus(t) {
		byName[c.Name] = c
	}
	send := func(name string) stack.SMTPResult {
		c, ok := byName[name]
		if !ok {
			t.Fatalf("no corpus case %q", name)
		}
		return stack.SendMail(t, pf.Addr, "client.example", attachtest.Sender, []string{attachtest.Rcpt}, c.Message)
	}
	waitLog := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(moat.Log(), want); {
			if time.Now().After(deadline) {
				t.Fatalf("moat's log lacks %q:\n%s", want, moat.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, name := range []string{"exe by name", "rtlo name hiding exe", "renamed executable", "nested zips", "zip bomb", "rar with executable"} {
		t.Run(name, func(t *testing.T) {
			res := send(name)
			if res.Code != 554 || !strings.HasPrefix(res.Text, "5.7.1 ") || !strings.Contains(res.Text, "not allowed") || !regexp.MustCompile(`\(ref=[A-Z2-7]{12}\)`).MatchString(res.Text) {
				t.Fatalf("%v", res)
			}
		})
	}
	waitLog(`checks="attachments=banned-name`)
	waitLog(`reason="attachments/banned-name:2:invoice%E2%80%AEfdp.exe:names=default%3A*.exe"`)
	if name := "clamav-testfiles clam.zip"; byName[name].Message != nil {
		if res := send(name); res.Code != 554 || !strings.Contains(res.Text, `"clam.exe" in the archive of part 2`) {
			t.Fatalf("clam.zip: %v", res)
		}
	}
	delivered := 0
	for _, tc := range []struct{ name, trace string }{
		{"pdf attachment", "attachments:clean"},
		{"encrypted zip", "attachments:encrypted-archive:2%3Acontract.doc::encrypted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if res := send(tc.name); !res.OK() {
				t.Fatalf("refused: %v", res)
			}
			delivered++
			msgs := pf.WaitMessages(t, attachtest.Rcpt, delivered, 30*time.Second)
			var trace string
			for _, m := range msgs {
				msg, err := mail.ReadMessage(bytes.NewReader(m))
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(msg.Header.Get("Subject"), strings.Fields(tc.name)[0]) {
					trace = msg.Header.Get("X-Moat")
				}
			}
			if !strings.Contains(trace, tc.trace) {
				t.Fatalf("X-Moat %q lacks %q", trace, tc.trace)
			}
		})
	}
	t.Run("macro quarantined", func(t *testing.T) {
		if res := send("ooxml with macro"); !res.OK() {
			t.Fatalf("refused: %v", res)
		}
		waitLog("attachments/macro:2%3Aword/vbaProject.bin")
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(pf.Log(), "milter-hold"); {
			if time.Now().After(deadline) {
				t.Fatalf("Postfix did not hold the message:\n%s", pf.Log())
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
