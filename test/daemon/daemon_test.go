// Package daemon holds the end-to-end tests of `moat serve` as a daemon: real Postfix and real Sendmail,
// started on loopback by test/stack, talk to the real moat binary over a unix socket and over TCP; SIGHUP
// reloads, SIGTERM drains the sessions in flight, check-config names file, line and key of each mistake, and
// miltertest speaks the protocol to it directly.
//
//	smtp client (test) -> Postfix or Sendmail -> moat (milter, "test" check scripting the answers)
//	                                  `-> Maildir (delivered message, with moat's headers)
package daemon

import (
	"errors"
	"fmt"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// moatConfig is the configuration every test starts from: the scripted "test" check, our authserv-id, and the
// given listeners.
func moatConfig(listen ...string) string {
	q := make([]string, len(listen))
	for i, l := range listen {
		q[i] = fmt.Sprintf("%q", l)
	}
	return `
[milter]
listen = [` + strings.Join(q, ", ") + `]
socket_mode = "0666"

[log]
level = "info"

[policy]
authserv_id = "mx.moat.test"

[checks.test]
reject_to = ["bad@example.test"]
tempfail_to = ["later@example.test"]
reject_body = "REJECT-THIS-BODY"
text = "refused by the test check"
header_name = "X-Test-Check"
header_value = "passed"
`
}

type moatUnderTest struct {
	*stack.Moat
	sock, tcp, config string
}

func startMoat(t *testing.T) *moatUnderTest {
	t.Helper()
	dir := stack.TempDir(t, "moat")
	m := &moatUnderTest{sock: filepath.Join(dir, "moat.sock"), tcp: fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t)),
		config: filepath.Join(dir, "moat.toml")}
	if err := os.WriteFile(m.config, []byte(moatConfig("unix:"+m.sock, "tcp:"+m.tcp)), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Moat = stack.StartMoat(t, m.config, "unix:"+m.sock, "tcp:"+m.tcp)
	return m
}

var refRE = regexp.MustCompile(`\(ref=([A-Z2-7]{12})\)`)

// replyRE matches moat's reply text for the test check, with Sendmail's optional "<addr>... " prefix.
func replyRE(enhanced, addr string) *regexp.Regexp {
	prefix := ""
	if addr != "" {
		prefix = "(<" + regexp.QuoteMeta(addr) + `>\.\.\. )?`
	}
	return regexp.MustCompile("^" + regexp.QuoteMeta(enhanced) + " " + prefix + `refused by the test check \(ref=[A-Z2-7]{12}\)$`)
}

func message(subject, body string, extra ...string) []byte {
	hdr := "From: Sender <sender@example.org>\r\nTo: ok@example.test\r\nSubject: " + subject + "\r\n" +
		"Message-ID: <" + fmt.Sprint(time.Now().UnixNano()) + "@example.org>\r\n"
	for _, e := range extra {
		hdr += e + "\r\n"
	}
	return []byte(hdr + "\r\n" + body + "\r\n")
}

// mta is what the assertions need of Postfix or Sendmail.
type mta interface {
	WaitMessages(t testing.TB, addr string, n int, timeout time.Duration) [][]byte
}

// assertCore runs the same transactions through any MTA wired to moat.
func assertCore(t *testing.T, m *moatUnderTest, addr string, box mta) {
	t.Helper()
	// 1. Accepted mail is delivered with moat's headers; a forged Authentication-Results claiming our
	// authserv-id is gone, another host's is kept.
	res := stack.SendMail(t, addr, "client.example.org", "sender@example.org", []string{"ok@example.test"},
		message("hello", "plain body",
			"Authentication-Results: mx.moat.test; dkim=pass header.d=bank.example",
			"Authentication-Results: other.example; spf=pass"))
	if !res.OK() {
		t.Fatalf("clean mail refused: %v", res)
	}
	msgs := box.WaitMessages(t, "ok@example.test", 1, 30*time.Second)
	got := string(msgs[0])
	for _, want := range []string{"X-Moat: ref=", "Authentication-Results: mx.moat.test; none", "X-Test-Check: passed",
		"Authentication-Results: other.example; spf=pass"} {
		if !strings.Contains(got, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "header.d=bank.example") {
		t.Errorf("forged Authentication-Results reached the mailbox:\n%s", got)
	}

	// 2. Per-recipient answers: moat's exact code and text reach the SMTP client; the good recipient still gets
	// the mail.
	res = stack.SendMailEach(t, addr, "client.example.org", "sender@example.org",
		[]string{"bad@example.test", "later@example.test", "ok@example.test"}, message("mixed", "body"))
	if len(res.RcptReplies) != 3 {
		t.Fatalf("rcpt replies: %+v", res.RcptReplies)
	}
	bad, later := res.RcptReplies[0], res.RcptReplies[1]
	// Sendmail puts "<addr>... " before the text; the code, enhanced code and text are moat's.
	if !replyRE("5.7.1", "bad@example.test").MatchString(bad.Text) || bad.Code != 550 {
		t.Errorf("reject: got %d %q, want 550 5.7.1 refused by the test check (ref=…)", bad.Code, bad.Text)
	}
	if !replyRE("4.7.1", "later@example.test").MatchString(later.Text) || later.Code != 451 {
		t.Errorf("tempfail: got %d %q, want 451 4.7.1 refused by the test check (ref=…)", later.Code, later.Text)
	}
	if !res.OK() {
		t.Errorf("the accepted recipient's mail was refused: %v", res)
	}
	box.WaitMessages(t, "ok@example.test", 2, 30*time.Second)
	// The reference id in the reply is in moat's summary line for that message.
	if mm := refRE.FindStringSubmatch(bad.Text); mm == nil {
		t.Errorf("no ref in %q", bad.Text)
	} else {
		waitFor(t, func() bool { return strings.Contains(m.Log(), "ref="+mm[1]) }, "moat log line with ref "+mm[1])
		line := lineWith(m.Log(), "ref="+mm[1])
		if !strings.Contains(line, "bad@example.test:reject") || !strings.Contains(line, "action=accept") {
			t.Errorf("summary line: %s", line)
		}
	}

	// 3. End-of-message rejection reaches the client at DATA.
	res = stack.SendMail(t, addr, "client.example.org", "sender@example.org", []string{"ok@example.test"},
		message("body reject", "this has REJECT-THIS-BODY in it"))
	if res.Stage != "DATA" || res.Code != 550 || !replyRE("5.7.1", "").MatchString(res.Text) {
		t.Errorf("body rejection: got %v", res)
	}

	// 4. Several messages over one SMTP connection are each judged.
	results := sendSession(t, addr, []envelope{
		{"a@example.org", "ok@example.test", message("one", "first")},
		{"b@example.org", "bad@example.test", message("two", "second")},
		{"c@example.org", "ok@example.test", message("three", "third")},
	})
	if len(results) != 3 || results[0] != 250 || results[1] != 550 || results[2] != 250 {
		t.Errorf("one connection, three messages: got codes %v, want [250 550 250]", results)
	}
	box.WaitMessages(t, "ok@example.test", 4, 30*time.Second)
}

type envelope struct {
	from, to string
	msg      []byte
}

// sendSession sends several messages over one SMTP connection, with RSET after a refusal, and returns the
// code that ended each: 250 when accepted, else the refusal's code.
func sendSession(t *testing.T, addr string, envs []envelope) []int {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	codeOf := func(err error) int {
		var te *textproto.Error
		if errors.As(err, &te) {
			return te.Code
		}
		t.Fatalf("smtp: %v", err)
		return 0
	}
	var out []int
	for _, e := range envs {
		if err := c.Mail(e.from); err != nil {
			out = append(out, codeOf(err))
			_ = c.Reset()
			continue
		}
		if err := c.Rcpt(e.to); err != nil {
			out = append(out, codeOf(err))
			_ = c.Reset()
			continue
		}
		w, err := c.Data()
		if err != nil {
			out = append(out, codeOf(err))
			_ = c.Reset()
			continue
		}
		_, _ = w.Write(e.msg)
		if err := w.Close(); err != nil {
			out = append(out, codeOf(err))
			continue
		}
		out = append(out, 250)
	}
	_ = c.Quit()
	return out
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lineWith(log, s string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) && strings.Contains(l, "msg=message") {
			return l
		}
	}
	return ""
}

// mailboxes exist in Postfix, so that only moat can refuse them.
var mailboxes = []string{"ok@example.test", "bad@example.test", "later@example.test"}

func TestPostfixOverUnixSocket(t *testing.T) {
	m := startMoat(t)
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + m.sock, Mailboxes: mailboxes})
	assertCore(t, m, pf.Addr, pf)
}

func TestPostfixOverTCP(t *testing.T) {
	m := startMoat(t)
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "inet:" + m.tcp, Mailboxes: mailboxes})
	assertCore(t, m, pf.Addr, pf)
}

func TestSendmailOverTCP(t *testing.T) {
	m := startMoat(t)
	sm := stack.StartSendmail(t, stack.SendmailOptions{Milter: "inet:" + m.tcp, LocalDomains: []string{"example.test"}})
	assertCore(t, m, sm.Addr, sm)
}

func TestSendmailOverUnixSocket(t *testing.T) {
	m := startMoat(t)
	sm := stack.StartSendmail(t, stack.SendmailOptions{Milter: m.sock, LocalDomains: []string{"example.test"}})
	assertCore(t, m, sm.Addr, sm)
}

// TestReloadAndShutdown: SIGHUP swaps in a valid new configuration; an invalid one is refused and the old one
// keeps working; SIGTERM stops moat cleanly.
func TestReloadAndShutdown(t *testing.T) {
	m := startMoat(t)
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + m.sock, Mailboxes: []string{"ok@example.test", "new@example.test"}})
	send := func(to string) stack.SMTPResult {
		return stack.SendMail(t, pf.Addr, "client.example.org", "sender@example.org", []string{to}, message("reload", "x"))
	}
	if res := send("new@example.test"); !res.OK() {
		t.Fatalf("before reload: %v", res)
	}
	cfg := strings.Replace(moatConfig("unix:"+m.sock, "tcp:"+m.tcp), `reject_to = ["bad@example.test"]`, `reject_to = ["new@example.test"]`, 1)
	if err := os.WriteFile(m.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(m.Log(), "configuration reloaded") }, "reload")
	if res := send("new@example.test"); res.Code != 550 {
		t.Errorf("after reload new@ should be refused, got %v", res)
	}
	// An invalid file is refused; the running configuration stays.
	if err := os.WriteFile(m.config, []byte(cfg+"\n[checks.test]\nbogus = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(m.Log(), "reload failed") }, "failed reload")
	if res := send("new@example.test"); res.Code != 550 {
		t.Errorf("after a failed reload the previous configuration must stay, got %v", res)
	}
	if res := send("ok@example.test"); !res.OK() {
		t.Errorf("after a failed reload: %v", res)
	}
	if err := m.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(t, 20*time.Second); err != nil {
		t.Errorf("moat did not exit cleanly on SIGTERM: %v", err)
	}
	if !strings.Contains(m.Log(), "moat stopped") {
		t.Errorf("no clean stop in the log:\n%s", m.Log())
	}
}

// TestMiltertest drives moat with an independent milter client, OpenDKIM's miltertest.
func TestMiltertest(t *testing.T) {
	stack.Need(t, "miltertest")
	m := startMoat(t)
	script, err := filepath.Abs("testdata/transaction.lua")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("miltertest", "-D", "socket=unix:"+m.sock, "-s", script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("miltertest failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "moat transaction ok") {
		t.Errorf("miltertest script did not finish:\n%s", out)
	}
}

// TestBadConfigs runs `moat check-config` on broken files; each must fail with an error naming file, line
// and key, so that the test cannot pass because moat failed for another reason.
func TestBadConfigs(t *testing.T) {
	bin := stack.BuildMoat(t)
	cases, err := filepath.Glob("testdata/bad_configs/*.toml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	for _, c := range cases {
		t.Run(filepath.Base(c), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(c, ".toml") + ".expected-error")
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "check-config", "-c", c).CombinedOutput()
			if err == nil {
				t.Fatalf("check-config accepted %s:\n%s", c, out)
			}
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Errorf("exit: %v, want status 1", err)
			}
			re := regexp.MustCompile(strings.TrimSpace(string(want)))
			if !re.Match(out) {
				t.Errorf("error %q does not match %q", out, want)
			}
		})
	}
}

// TestShutdownDrainsSessionInFlight: SIGTERM while a message is being checked lets that message finish
// (delivered, with moat's headers), then moat exits.
func TestShutdownDrainsSessionInFlight(t *testing.T) {
	dir := stack.TempDir(t, "moat")
	sock := filepath.Join(dir, "moat.sock")
	cfg := filepath.Join(dir, "moat.toml")
	body := moatConfig("unix:"+sock) + "delay = \"2s\"\n"
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	m := stack.StartMoat(t, cfg, "unix:"+sock)
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + sock, Mailboxes: mailboxes})
	done := make(chan stack.SMTPResult, 1)
	go func() {
		done <- stack.SendMail(t, pf.Addr, "client.example.org", "sender@example.org", []string{"ok@example.test"}, message("drain", "body"))
	}()
	// Wait until the message is in its end-of-message check, then ask moat to stop.
	time.Sleep(1 * time.Second)
	if err := m.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if !res.OK() {
		t.Fatalf("the message in flight was not accepted: %v\n%s", res, m.Log())
	}
	msgs := pf.WaitMessages(t, "ok@example.test", 1, 30*time.Second)
	if !strings.Contains(string(msgs[0]), "X-Moat: ref=") {
		t.Errorf("delivered without moat's headers:\n%s", msgs[0])
	}
	if err := m.Wait(t, 20*time.Second); err != nil {
		t.Errorf("moat did not exit after draining: %v", err)
	}
	if !strings.Contains(m.Log(), "waiting for sessions in flight") || !strings.Contains(m.Log(), "moat stopped") {
		t.Errorf("log:\n%s", m.Log())
	}
}
