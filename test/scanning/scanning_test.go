// Package scanning holds the end-to-end tests of content scanning: real Postfix, the moat binary as
// its milter, real clamd and spamd.
//
//	SendMail -> Postfix smtpd (127.0.0.1) -> moat (unix socket milter) -> clamd (unix socket) + spamd (TCP)
//	                    |
//	                    +-> virtual(8) -> Maildir of bob@example.net, read back by the test
//
// Every daemon comes from test/stack; with CI=true a missing one fails the test.
package scanning

import (
	"bytes"
	"context"
	"fmt"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/scanners/servers"
	"github.com/moatmail/moat/scanners/spamc"
	"github.com/moatmail/moat/test/stack"
)

const (
	rcpt   = "bob@example.net"
	sender = "alice@example.org"
)

// env is the running stack of one test.
type env struct {
	clamd   *stack.Clamd
	spamd   *stack.Spamd
	postfix *stack.Postfix
	moat    *stack.Moat
	conf    string
	dir     string
}

// startAll starts clamd, spamd, moat (configured with policyTable and checksExtra) and Postfix.
func startAll(t testing.TB, policyTable string, postfixExtra map[string]string, clamdOpts stack.ClamdOptions) *env {
	t.Helper()
	stack.Need(t, "clamd", "spamd", "postfix")
	e := &env{dir: stack.TempDir(t, "scanning")}
	e.clamd = stack.StartClamd(t, clamdOpts)
	e.spamd = stack.StartSpamd(t)
	e.writeConfig(t, policyTable)
	sock := filepath.Join(e.dir, "moat.sock")
	e.moat = stack.StartMoat(t, e.conf, "unix:"+sock)
	e.postfix = stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + sock, Mailboxes: []string{rcpt}, ExtraMain: postfixExtra})
	return e
}

func (e *env) writeConfig(t testing.TB, policyTable string) {
	t.Helper()
	e.conf = filepath.Join(e.dir, "moat.toml")
	conf := fmt.Sprintf(`[milter]
listen = ["unix:%s"]
socket_mode = "0666"
spool_dir = %q
spool_memory = 1048576

[log]
level = "info"

[policy]
authserv_id = "mx.moat.test"
%s

[checks.clamd]
servers = ["unix:%s"]
max_size = "60M"
timeout = "60s"

[checks.spamd]
servers = ["tcp:%s"]
timeout = "60s"
`, filepath.Join(e.dir, "moat.sock"), e.dir, policyTable, e.clamd.Socket, e.spamd.Addr)
	if err := os.WriteFile(e.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

func message(subject, extraHeaders, body string) []byte {
	return []byte(fmt.Sprintf("From: Alice <%s>\r\nTo: Bob <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@example.org>\r\n%s\r\n%s\r\n",
		sender, rcpt, subject, time.Now().UTC().Format(time.RFC1123Z), time.Now().UnixNano(), extraHeaders, body))
}

const hamBody = "Hi Bob,\r\n\r\nhere are the minutes of Monday's meeting. We agreed to move the review to Thursday\r\n" +
	"and to keep the budget as it is. Carol will send the slides before the call.\r\n\r\nAlice\r\n"

// mediumBody is a message that the packaged rules score a few points: enough to tag, far from GTUBE.
const mediumBody = "<html><body><p><b>DEAR FRIEND!!!</b></p><p>CLICK HERE for 100% FREE VIAGRA and CIALIS,\r\n" +
	"no prescription needed, LOWEST PRICES, act now! Limited time offer! Make money fast from home,\r\n" +
	"guaranteed winner, casino bonus, unsubscribe below.</p></body></html>\r\n"

func mediumMessage() []byte {
	return []byte(fmt.Sprintf("From: \"BEST DEALS\" <deals@cheap-pills.example>\r\nTo: %s\r\nSubject: FREE VIAGRA!!! LOWEST PRICES GUARANTEED\r\n"+
		"Date: %s\r\nMessage-ID: <%d@cheap-pills.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n%s",
		rcpt, time.Now().UTC().Format(time.RFC1123Z), time.Now().UnixNano(), mediumBody))
}

// deliveredHeaders parses the newest delivered message of bob and returns its header.
func parse(t *testing.T, raw []byte) mail.Header {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("delivered message does not parse: %v\n%s", err, raw)
	}
	return m.Header
}

// score asks spamd directly (as moat will) what a message scores.
func score(t *testing.T, addr string, msg []byte) float64 {
	t.Helper()
	c := spamc.NewClient([]servers.Server{{Network: "tcp", Addr: addr}}, spamc.ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.Check(ctx, spamc.CmdSymbols, "", spamc.BytesBody(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("spamd score %.1f tests=%s", res.Score, strings.Join(res.Symbols, ","))
	return res.Score
}

// pick returns the one delivered message containing marker: Maildir file names do not keep the delivery order
// of messages delivered within the same second.
func pick(t *testing.T, msgs [][]byte, marker string) []byte {
	t.Helper()
	var found []byte
	for _, m := range msgs {
		if bytes.Contains(m, []byte(marker)) {
			if found != nil {
				t.Fatalf("more than one delivered message contains %q", marker)
			}
			found = m
		}
	}
	if found == nil {
		t.Fatalf("no delivered message contains %q", marker)
	}
	return found
}

var refRE = regexp.MustCompile(`\(ref=[A-Z2-7]{12}\)`)

func TestScanningThroughPostfix(t *testing.T) {
	// Thresholds: the medium message must land between tag and reject. Its score with the packaged rules is
	// measured first (with a spamd of the same configuration), so the test does not depend on rule updates.
	probe := stack.StartSpamd(t)
	hamScore := score(t, probe.Addr, message("minutes", "", hamBody))
	midScore := score(t, probe.Addr, mediumMessage())
	probe.Stop()
	if midScore < hamScore+2 {
		t.Fatalf("the medium message scores %.1f, the ham %.1f: not far enough apart to put a tag threshold between", midScore, hamScore)
	}
	tag := (hamScore + midScore) / 2
	policyTable := fmt.Sprintf("tag_score = %.2f\nreject_score = %.2f\n", tag, midScore+50)
	e := startAll(t, policyTable, nil, stack.ClamdOptions{})
	delivered := 0

	t.Run("gtube rejected with moat's code and text", func(t *testing.T) {
		res := stack.SendMail(t, e.postfix.Addr, "client.example", sender, []string{rcpt}, message("test", "", stack.GTUBE))
		if res.Code != 550 || !strings.HasPrefix(res.Text, "5.7.1 Message considered spam (score 10") || !refRE.MatchString(res.Text) {
			t.Fatalf("GTUBE: %v\n%s", res, e.moat.Log())
		}
	})
	t.Run("eicar rejected", func(t *testing.T) {
		res := stack.SendMail(t, e.postfix.Addr, "client.example", sender, []string{rcpt}, message("eicar", "", stack.EICAR))
		if res.Code != 554 || !strings.HasPrefix(res.Text, "5.7.1 Virus found: "+stack.ClamEicarBodySig) || !refRE.MatchString(res.Text) {
			t.Fatalf("EICAR: %v", res)
		}
		// moat writes its log line just after it answered: allow it a moment.
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(e.moat.Log(), "Virus found: "+stack.ClamEicarBodySig); {
			if time.Now().After(deadline) {
				t.Fatalf("virus name not in moat's log:\n%s", e.moat.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("ham delivered with X-Spam-Status No and forged headers gone", func(t *testing.T) {
		forged := "X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=99.0 required=5.0 tests=FORGED\r\nX-Spam-Score: 99.0\r\n" +
			"X-Spam-Level: **********\r\nX-Virus-Scanned: forged-scanner clean\r\n"
		res := stack.SendMail(t, e.postfix.Addr, "client.example", sender, []string{rcpt}, message("minutes", forged, hamBody))
		if !res.OK() {
			t.Fatalf("ham refused: %v", res)
		}
		delivered++
		msgs := e.postfix.WaitMessages(t, rcpt, delivered, 30*time.Second)
		raw := pick(t, msgs, "Subject: minutes")
		h := parse(t, raw)
		status := h["X-Spam-Status"]
		if len(status) != 1 || !strings.HasPrefix(status[0], "No, score=") || !strings.Contains(status[0], fmt.Sprintf("required=%.1f", tag)) {
			t.Fatalf("X-Spam-Status = %q\n%s", status, raw)
		}
		if len(h["X-Spam-Flag"]) != 0 {
			t.Fatalf("ham has X-Spam-Flag %q", h["X-Spam-Flag"])
		}
		if v := h["X-Virus-Scanned"]; len(v) != 1 || v[0] != "moat (clamd)" {
			t.Fatalf("X-Virus-Scanned = %q", v)
		}
		if lv := h["X-Spam-Level"]; len(lv) != 1 || strings.Contains(lv[0], "**********") {
			t.Fatalf("X-Spam-Level = %q (forged one kept?)", lv)
		}
		if sc := h["X-Spam-Score"]; len(sc) != 1 || sc[0] == "99.0" {
			t.Fatalf("X-Spam-Score = %q (forged one kept?)", sc)
		}
		for _, bad := range []string{"FORGED", "forged-scanner", "score=99.0"} {
			if bytes.Contains(raw, []byte(bad)) {
				t.Fatalf("forged header text %q delivered:\n%s", bad, raw)
			}
		}
	})
	t.Run("between tag and reject delivered with X-Spam-Flag YES", func(t *testing.T) {
		res := stack.SendMail(t, e.postfix.Addr, "client.example", "deals@cheap-pills.example", []string{rcpt}, mediumMessage())
		if !res.OK() {
			t.Fatalf("medium message refused: %v", res)
		}
		delivered++
		msgs := e.postfix.WaitMessages(t, rcpt, delivered, 30*time.Second)
		raw := pick(t, msgs, "Return-Path: <deals@cheap-pills.example>")
		h := parse(t, raw)
		if f := h["X-Spam-Flag"]; len(f) != 1 || f[0] != "YES" {
			t.Fatalf("X-Spam-Flag = %q\n%s", f, raw)
		}
		status := h["X-Spam-Status"]
		if len(status) != 1 || !strings.HasPrefix(status[0], "Yes, score=") {
			t.Fatalf("X-Spam-Status = %q", status)
		}
		sc, err := strconv.ParseFloat(h.Get("X-Spam-Score"), 64)
		if err != nil || sc < tag {
			t.Fatalf("X-Spam-Score = %q, tag %.1f", h.Get("X-Spam-Score"), tag)
		}
		if lv := h.Get("X-Spam-Level"); lv != strings.Repeat("*", int(sc)) {
			t.Fatalf("X-Spam-Level = %q for score %.1f", lv, sc)
		}
	})
	t.Run("never a bounce to the sender", func(t *testing.T) {
		// Rejections happen in the SMTP dialogue; nothing may be queued back to the sender.
		if strings.Contains(e.postfix.Log(), "sender non-delivery notification") {
			t.Fatalf("Postfix generated a bounce:\n%s", e.postfix.Log())
		}
		if _, err := os.Stat(e.postfix.Maildir(sender)); err == nil {
			t.Fatal("something was delivered to the sender")
		}
	})
	t.Run("moat learn changes the Bayes database", func(t *testing.T) {
		dir := t.TempDir()
		var files []string
		for i := 0; i < 2; i++ {
			p := filepath.Join(dir, fmt.Sprintf("spam%d.eml", i))
			// Distinct bodies: SpamAssassin recognises a message it learned by its Date and body digest.
			os.WriteFile(p, message(fmt.Sprintf("cheap pills %d", i), "", fmt.Sprintf("offer number %d\r\n%s", i, mediumBody)), 0o644)
			files = append(files, p)
		}
		before := nspam(e.spamd.DumpMagic(t))
		out, err := exec.Command(e.moat.Bin, append([]string{"learn", "-c", e.conf, "spam"}, files...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("moat learn: %v\n%s", err, out)
		}
		if strings.Count(string(out), "learned as spam") != 2 {
			t.Fatalf("moat learn output:\n%s", out)
		}
		after := nspam(e.spamd.DumpMagic(t))
		if after != before+2 {
			t.Fatalf("nspam %d -> %d after learning 2 messages", before, after)
		}
		out, err = exec.Command(e.moat.Bin, "learn", "-c", e.conf, "forget", files[0]).CombinedOutput()
		if err != nil || nspam(e.spamd.DumpMagic(t)) != after-1 {
			t.Fatalf("moat learn forget: %v\n%s", err, out)
		}
	})
	t.Run("moat learn with user_per_domain needs the recipient domain", func(t *testing.T) {
		raw, err := os.ReadFile(e.conf)
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(e.dir, "moat-per-domain.toml")
		perDomain := strings.Replace(string(raw), "[checks.spamd]\n", "[checks.spamd]\nuser_per_domain = true\n", 1)
		if err := os.WriteFile(conf, []byte(perDomain), 0o644); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "spam.eml")
		os.WriteFile(file, message("per-domain pills", "", "per-domain offer\r\n"+mediumBody), 0o644)
		before := nspam(e.spamd.DumpMagic(t))
		cmd := exec.Command(e.moat.Bin, "learn", "-c", conf, "spam", file)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "-rcpt-domain") {
			t.Fatalf("moat learn without -rcpt-domain: %v (want exit 2 and a hint)\n%s", err, out)
		}
		if got := nspam(e.spamd.DumpMagic(t)); got != before {
			t.Fatalf("refused learn changed nspam %d -> %d", before, got)
		}
		out, err = exec.Command(e.moat.Bin, "learn", "-c", conf, "-rcpt-domain", "example.net", "spam", file).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "learned as spam") {
			t.Fatalf("moat learn -rcpt-domain: %v\n%s", err, out)
		}
		if got := nspam(e.spamd.DumpMagic(t)); got != before+1 {
			t.Fatalf("nspam %d -> %d after learning 1 message", before, got)
		}
	})
	t.Run("spamd down: delivered, X-Spam-Status unscanned", func(t *testing.T) {
		e.spamd.Stop()
		res := stack.SendMail(t, e.postfix.Addr, "client.example", sender, []string{rcpt}, message("minutes again", "", hamBody))
		if !res.OK() {
			t.Fatalf("refused with spamd down (default on_failure is accept): %v", res)
		}
		delivered++
		msgs := e.postfix.WaitMessages(t, rcpt, delivered, 30*time.Second)
		h := parse(t, pick(t, msgs, "Subject: minutes again"))
		if st := h["X-Spam-Status"]; len(st) != 1 || !strings.HasPrefix(st[0], "unscanned (spamd") {
			t.Fatalf("X-Spam-Status = %q", st)
		}
		if v := h["X-Virus-Scanned"]; len(v) != 1 || v[0] != "moat (clamd)" {
			t.Fatalf("X-Virus-Scanned = %q", v)
		}
	})
	t.Run("clamd down: tempfail, fail closed", func(t *testing.T) {
		e.clamd.Stop()
		res := stack.SendMail(t, e.postfix.Addr, "client.example", sender, []string{rcpt}, message("minutes again", "", hamBody))
		if res.Code != 451 || !strings.HasPrefix(res.Text, "4.7.1 Virus scan unavailable") || !refRE.MatchString(res.Text) {
			t.Fatalf("with clamd down: %v", res)
		}
	})
}

var nspamRE = regexp.MustCompile(`(?m)^0\.000\s+0\s+(\d+)\s+0\s+non-token data: nspam$`)

func nspam(magic string) int {
	m := nspamRE.FindStringSubmatch(magic)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
