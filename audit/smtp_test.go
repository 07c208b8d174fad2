package audit

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/rules/relay/relaytest"
)

// fakeMX is a scripted SMTP server for the unit tests of the SMTP step: it answers from its settings and
// records every command it receives.
type fakeMX struct {
	addr      string
	banner    string           // the name in the 220 line
	cert      *tls.Certificate // nil: no STARTTLS
	maxTLS    uint16
	openRelay bool   // accept every RCPT
	routing   bool   // accept every RCPT for @smtp.test, routing forms included
	vrfy      string // the reply to VRFY and EXPN of postmaster
	vrfyOther string // the reply for other names ("" = vrfy)

	mu       sync.Mutex
	commands []string
}

func startFakeMX(t *testing.T, m *fakeMX) *fakeMX {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	m.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go m.serve(c)
		}
	}()
	return m
}

func (m *fakeMX) record(cmd string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commands = append(m.commands, cmd)
}

func (m *fakeMX) seen() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.commands...)
}

func (m *fakeMX) serve(c net.Conn) {
	defer func() { c.Close() }()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	say := func(s string) { _, _ = w.WriteString(s + "\r\n"); _ = w.Flush() }
	say("220 " + m.banner + " ESMTP fake")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		m.record(line)
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			ext := "250-" + m.banner + "\r\n250-PIPELINING\r\n"
			if m.cert != nil {
				ext += "250-STARTTLS\r\n"
			}
			say(ext + "250 8BITMIME")
		case "STARTTLS":
			say("220 2.0.0 Ready to start TLS")
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*m.cert}, MinVersion: tls.VersionTLS10, MaxVersion: m.maxTLS})
			if err := tc.Handshake(); err != nil {
				return
			}
			c = tc
			r, w = bufio.NewReader(c), bufio.NewWriter(c)
		case "MAIL":
			say("250 2.1.0 Ok")
		case "RCPT":
			rcpt := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(arg, "TO:<"), ">"))
			local := strings.HasSuffix(rcpt, "@smtp.test") && !strings.ContainsAny(strings.TrimSuffix(rcpt, "@smtp.test"), `%!@"\:`)
			if m.openRelay || (m.routing && strings.HasSuffix(rcpt, "@smtp.test")) || local {
				say("250 2.1.5 Ok")
			} else {
				say("554 5.7.1 Relay access denied")
			}
		case "RSET":
			say("250 2.0.0 Ok")
		case "VRFY", "EXPN":
			reply := m.vrfy
			if !strings.EqualFold(arg, "postmaster") && m.vrfyOther != "" {
				reply = m.vrfyOther
			}
			say(reply)
		case "DATA":
			say("354 go ahead")
		case "QUIT":
			say("221 2.0.0 Bye")
			return
		default:
			say("502 5.5.2 Error: command not recognized")
		}
	}
}

// smtpZone: smtp.test's MX mail.smtp.test at 127.0.0.40, PTR confirmed.
var smtpZone = []string{
	"smtp.test. MX 10 mail.smtp.test.",
	"mail.smtp.test. A 127.0.0.40",
	"40.0.0.127.in-addr.arpa. PTR mail.smtp.test.",
}

func smtpAudit(t *testing.T, ca *testCA, m *fakeMX) *Report {
	t.Helper()
	srv := dnstest.Start(t, smtpZone...)
	return runAudit(t, srv, Options{Domain: "smtp.test", Connect: m.addr, SkipMTA: true, RootCAs: ca.pool})
}

func TestSMTPGoodServer(t *testing.T) {
	ca := mustCA(t)
	cert := ca.leaf(t, false, "mail.smtp.test")
	m := startFakeMX(t, &fakeMX{banner: "mail.smtp.test", cert: &cert, vrfy: "502 5.5.1 VRFY command is disabled"})
	rep := smtpAudit(t, ca, m)
	sec := "smtp mail.smtp.test"
	mustLevel(t, rep, sec, "greeting", Pass, "220 mail.smtp.test")
	mustLevel(t, rep, "dns", "ptr-banner", Pass, "the PTR name mail.smtp.test is the name the MTA announces")
	mustLevel(t, rep, sec, "starttls", Pass)
	mustLevel(t, rep, sec, "tls-version", Pass, "TLS 1.3")
	mustLevel(t, rep, sec, "certificate", Pass, "valid for mail.smtp.test")
	mustLevel(t, rep, sec, "relay", Pass, fmt.Sprintf("all %d relay forms refused", len(relaytest.Battery("smtp.test", "127.0.0.1"))))
	mustLevel(t, rep, sec, "vrfy", Pass, "502")
	mustLevel(t, rep, sec, "expn", Pass, "502")

	// Never DATA; every RCPT is followed by RSET; the session ends with QUIT.
	cmds := m.seen()
	rcpts := 0
	for i, c := range cmds {
		switch {
		case strings.EqualFold(c, "DATA"):
			t.Fatalf("the audit sent DATA: %v", cmds)
		case strings.HasPrefix(c, "RCPT TO:"):
			rcpts++
			if i+1 >= len(cmds) || cmds[i+1] != "RSET" {
				t.Errorf("RCPT not followed by RSET at %d: %v", i, cmds[i:min(i+3, len(cmds))])
			}
		}
	}
	if rcpts != len(relaytest.Battery("smtp.test", "127.0.0.1")) {
		t.Errorf("%d RCPT commands, want one per battery form", rcpts)
	}
	if cmds[len(cmds)-1] != "QUIT" {
		t.Errorf("last command %q, want QUIT", cmds[len(cmds)-1])
	}
}

func TestSMTPExpiredCertificate(t *testing.T) {
	ca := mustCA(t)
	cert := ca.leaf(t, true, "mail.smtp.test")
	m := startFakeMX(t, &fakeMX{banner: "mail.smtp.test", cert: &cert, vrfy: "502 5.5.1 no"})
	rep := smtpAudit(t, ca, m)
	mustLevel(t, rep, "smtp mail.smtp.test", "certificate", Fail, "expired on")
	if !rep.Failed() {
		t.Error("an expired certificate did not fail the report")
	}
}

func TestSMTPWrongNameAndOldTLS(t *testing.T) {
	ca := mustCA(t)
	cert := ca.leaf(t, false, "other.smtp.test")
	m := startFakeMX(t, &fakeMX{banner: "mail.smtp.test", cert: &cert, maxTLS: tls.VersionTLS11, vrfy: "502 5.5.1 no"})
	rep := smtpAudit(t, ca, m)
	mustLevel(t, rep, "smtp mail.smtp.test", "certificate", Fail, "not valid for mail.smtp.test")
	mustLevel(t, rep, "smtp mail.smtp.test", "tls-version", Fail, "negotiated TLS 1.1")
}

func TestSMTPNoTLSOpenRelayVRFY(t *testing.T) {
	ca := mustCA(t)
	m := startFakeMX(t, &fakeMX{banner: "localhost", openRelay: true, vrfy: "250 2.0.0 postmaster@smtp.test"})
	rep := smtpAudit(t, ca, m)
	sec := "smtp mail.smtp.test"
	mustLevel(t, rep, sec, "starttls", Fail, "not offered")
	mustLevel(t, rep, sec, "relay", Fail, "open relay", "plain relay (RCPT TO:<victim@remote.example> answered 250", "loopback")
	mustLevel(t, rep, sec, "vrfy", Warn, "confirms addresses")
	mustLevel(t, rep, "dns", "ptr-banner", Fail, `announces "localhost"`)
}

func TestSMTPVRFYTellsNamesApart(t *testing.T) {
	ca := mustCA(t)
	m := startFakeMX(t, &fakeMX{banner: "mail.smtp.test", vrfy: "252 2.0.0 postmaster", vrfyOther: "550 5.1.1 unknown"})
	rep := smtpAudit(t, ca, m)
	mustLevel(t, rep, "smtp mail.smtp.test", "vrfy", Warn, "252 for postmaster and 550")
}

func TestSMTPUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rep := smtpAudit(t, mustCA(t), &fakeMX{addr: addr})
	mustLevel(t, rep, "smtp mail.smtp.test", "greeting", Fail, "refused")
}

func TestSMTPRoutingFormsWarn(t *testing.T) {
	ca := mustCA(t)
	m := startFakeMX(t, &fakeMX{banner: "mail.smtp.test", routing: true, vrfy: "502 5.5.1 no"})
	rep := smtpAudit(t, ca, m)
	mustLevel(t, rep, "smtp mail.smtp.test", "relay", Warn, "routing forms", "percent hack (RCPT TO:<victim%remote.example@smtp.test> answered 250")
	mustNone(t, rep, "smtp mail.smtp.test", "relay", Fail)
}
