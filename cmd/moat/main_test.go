package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
	_ "github.com/moatmail/moat/test/scriptedcheck"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "moat.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const scanConfig = `
[milter]
listen = ["unix:moat.sock"]
[policy]
authserv_id = "mx.example.test"
[checks.test]
reject_to = ["bad@example.test"]
reject_from = ["spammer@example.org"]
text = "no thanks"
header_name = "X-Test"
header_value = "ok"
`

func runScanJSON(t *testing.T, cfg string, msg string, args ...string) (scanReport, string) {
	t.Helper()
	msgPath := filepath.Join(t.TempDir(), "m.eml")
	if err := os.WriteFile(msgPath, []byte(msg), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(append(append([]string{"scan", "-c", cfg}, args...), msgPath), &out, &errb)
	if code != 0 {
		t.Fatalf("scan exit %d: %s", code, errb.String())
	}
	var rep scanReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("scan output is not JSON: %v\n%s", err, out.String())
	}
	return rep, out.String()
}

const plainMessage = "From: Alice <alice@example.org>\nTo: ok@example.test\nSubject: hi\nAuthentication-Results: mx.example.test; spf=pass\n\nhello\n"

func TestScanAcceptsAndReportsHeaders(t *testing.T) {
	cfg := writeConfig(t, scanConfig)
	rep, raw := runScanJSON(t, cfg, plainMessage)
	if rep.Action != "accept" || rep.SMTPCode != 250 || rep.Ref == "" {
		t.Fatalf("report: %s", raw)
	}
	names := map[string]bool{}
	for _, h := range rep.HeadersAdded {
		names[h.Name] = true
	}
	for _, want := range []string{"Authentication-Results", "X-Moat", "X-Test"} {
		if !names[want] {
			t.Errorf("headers_added lacks %s: %s", want, raw)
		}
	}
	if len(rep.HeadersRemoved) != 1 || rep.HeadersRemoved[0].Name != "Authentication-Results" {
		t.Errorf("the forged Authentication-Results must be in headers_removed: %s", raw)
	}
	if len(rep.Checks) == 0 || rep.Checks[0].Name != "test" {
		t.Errorf("checks: %s", raw)
	}
	for _, k := range []string{`"action"`, `"smtp_code"`, `"smtp_text"`, `"score"`, `"checks"`, `"headers_added"`, `"headers_removed"`, `"ref"`} {
		if !strings.Contains(raw, k) {
			t.Errorf("JSON lacks %s", k)
		}
	}
}

func TestScanRejections(t *testing.T) {
	cfg := writeConfig(t, scanConfig)
	rep, raw := runScanJSON(t, cfg, plainMessage, "--rcpt", "bad@example.test")
	if rep.Action != "reject" || rep.SMTPCode != 550 || rep.SMTPText != "5.7.1 no thanks (ref="+rep.Ref+")" || rep.Stage != "rcpt" {
		t.Errorf("rcpt rejection: %s", raw)
	}
	rep, raw = runScanJSON(t, cfg, plainMessage, "--from", "spammer@example.org")
	if rep.Action != "reject" || rep.Stage != "mail" {
		t.Errorf("mail rejection: %s", raw)
	}
	rep, raw = runScanJSON(t, cfg, plainMessage, "--from", "broken address@x")
	if rep.Action != "reject" || rep.SMTPCode != 553 {
		t.Errorf("malformed sender: %s", raw)
	}
}

func TestCheckConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-c", writeConfig(t, scanConfig)}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "checks: test") {
		t.Errorf("output: %s", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"check-config", "-c", writeConfig(t, "[log]\nlevel = \"loud\"\n")}, &out, &errb); code != 1 {
		t.Fatalf("bad log level accepted: %d", code)
	}
	if !strings.Contains(errb.String(), "moat.toml:2: log.level:") {
		t.Errorf("error: %s", errb.String())
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	f, err := config.Load("../../moat.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadMilterConfig(f); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-c", "../../moat.example.toml"}, &out, &errb); code != 0 {
		t.Fatalf("moat.example.toml (what make run uses) is invalid: %s", errb.String())
	}
}

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if run([]string{"version"}, &out, &errb) != 0 || !strings.HasPrefix(out.String(), "moat ") {
		t.Errorf("version: %q", out.String())
	}
	if run([]string{"frobnicate"}, &out, &errb) != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Errorf("unknown command: %q", errb.String())
	}
}

func TestJSONLogs(t *testing.T) {
	var buf bytes.Buffer
	log, closer, err := newLogger(logConfig{Format: "json", Level: "info"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	log.Info("message", "ref", "ABC")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil || m["ref"] != "ABC" {
		t.Errorf("json log line %q: %v", buf.String(), err)
	}
}

func TestDKIMKeygen(t *testing.T) {
	for _, typ := range []string{"rsa", "ed25519"} {
		var out, errb bytes.Buffer
		if code := run([]string{"dkim", "keygen", "example.com", "sel1", "--type", typ}, &out, &errb); code != 0 {
			t.Fatalf("%s: exit %d: %s", typ, code, errb.String())
		}
		if !strings.Contains(out.String(), "PRIVATE KEY") || !strings.Contains(out.String(), "sel1._domainkey.example.com") {
			t.Errorf("%s: output lacks the key or the record:\n%s", typ, out.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"dkim", "keygen", "example.com"}, &out, &errb); code != 2 {
		t.Errorf("missing selector: exit %d", code)
	}
}
