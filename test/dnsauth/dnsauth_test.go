// Package dnsauth holds the end-to-end tests of the DNS checks and sender authentication: real
// Postfix, the moat binary as its milter, and a real DNS server (unbound on 127.0.0.1, local data only).
//
//	test client (127.0.0.x) -> Postfix smtpd (127.0.0.1) -> moat (unix socket milter) -> unbound (127.0.0.1)
//	                                 |
//	                                 +-> virtual(8) -> Maildir of bob@dest.test, read back by the test
//
// Every daemon comes from test/stack; with CI=true a missing one fails the test.
package dnsauth

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/dkim"
	"github.com/moatmail/moat/test/stack"
)

const rcpt = "bob@dest.test"

// env is the running stack of one test.
type env struct {
	dns     *stack.DNS
	moat    *stack.Moat
	postfix *stack.Postfix
	dir     string
	key     crypto.Signer // signs signed.test mail in the test (the sender's own DKIM)
	outRSA  crypto.Signer // moat's keys for out.test (dkimsign)
	outEd   crypto.Signer
}

// zone is the test DNS data. 127.0.0.1 has forward-confirmed reverse DNS; 127.0.0.2 is on the block list.
func zone(t testing.TB, key, outRSA, outEd crypto.Signer) []string {
	return []string{
		"sel._domainkey.signed.test. 300 IN TXT " + txtStrings(t, key),
		"rsa._domainkey.out.test. 300 IN TXT " + txtStrings(t, outRSA),
		"ed._domainkey.out.test. 300 IN TXT " + txtStrings(t, outEd),
		"1.0.0.127.in-addr.arpa. 300 IN PTR client.moat.test.",
		"client.moat.test. 300 IN A 127.0.0.1",
		"2.0.0.127.bl.test. 300 IN A 127.0.0.2",
		`good.test. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`spf-fail.test. 300 IN TXT "v=spf1 ip4:192.0.2.1 -all"`,
		`signed.test. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`_dmarc.signed.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`strict.test. 300 IN TXT "v=spf1 ?all"`,
		`_dmarc.strict.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`_dmarc.xn--bcher-kva.test. 300 IN TXT "v=DMARC1; p=reject"`,
	}
}

// txtStrings is the DKIM key record of a key as quoted character-strings of at most 200 bytes (unbound
// takes several strings in one local-data line).
func txtStrings(t testing.TB, key crypto.Signer) string {
	rec, err := dkim.TXTRecord(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for len(rec) > 200 {
		parts = append(parts, `"`+rec[:200]+`"`)
		rec = rec[200:]
	}
	parts = append(parts, `"`+rec+`"`)
	return strings.Join(parts, " ")
}

// checksConfig turns on every DNS check: rdns, dnsbl, spf, dkim and dmarc.
const checksConfig = `
[checks.rdns]
[checks.dnsbl]
threshold = 1
[[checks.dnsbl.lists]]
zone = "bl.test=127.0.0.[2..11]*1"
reply_text = "listed by bl.test"
[checks.spf]
[checks.dkim]
[checks.dmarc]
`

func start(t *testing.T) *env {
	t.Helper()
	stack.Need(t, "unbound", "postfix")
	e := &env{dir: stack.TempDir(t, "dnsauth")}
	key, err := dkim.GenerateKey("rsa")
	if err != nil {
		t.Fatal(err)
	}
	e.key = key
	if e.outRSA, err = dkim.GenerateKey("rsa"); err != nil {
		t.Fatal(err)
	}
	if e.outEd, err = dkim.GenerateKey("ed25519"); err != nil {
		t.Fatal(err)
	}
	e.dns = stack.StartDNS(t, zone(t, key, e.outRSA, e.outEd))
	sock := filepath.Join(e.dir, "moat.sock")
	conf := filepath.Join(e.dir, "moat.toml")
	rsaPath, edPath := filepath.Join(e.dir, "out-rsa.pem"), filepath.Join(e.dir, "out-ed.pem")
	writeKey(t, rsaPath, e.outRSA)
	writeKey(t, edPath, e.outEd)
	cfg := fmt.Sprintf(`[milter]
listen = ["unix:%s"]
socket_mode = "0666"
spool_dir = %q

[log]
level = "info"

[dns]
servers = [%q]
timeout = "500ms"
retries = 1

[policy]
authserv_id = "mx.moat.test"
%s
# 127.0.0.4 is a trusted network: its mail is signed (and exempt from the DNS checks).
[checks.relay]
local_domains = ["dest.test"]
trusted_networks = ["127.0.0.4/32"]
[checks.dkimsign]
[[checks.dkimsign.keys]]
domain = "out.test"
selector = "rsa"
key_file = %q
[[checks.dkimsign.keys]]
domain = "out.test"
selector = "ed"
key_file = %q
`, sock, e.dir, e.dns.Addr, checksConfig, rsaPath, edPath)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.moat = stack.StartMoat(t, conf, "unix:"+sock)
	e.postfix = stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + sock, Mailboxes: []string{rcpt}})
	return e
}

func writeKey(t *testing.T, path string, k crypto.Signer) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// result is what the SMTP client saw.
type result struct {
	stage string // MAIL, RCPT, DATA (DATA with code 250: accepted)
	code  int
	text  string
}

func (r result) String() string { return fmt.Sprintf("%s %d %s", r.stage, r.code, r.text) }

// send plays one transaction from the loopback address src.
func send(t *testing.T, addr, src, helo, from string, msg []byte) result {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	r := bufio.NewReader(c)
	read := func() (int, string) {
		var code int
		var lines []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v (so far %q)", err, lines)
			}
			line = strings.TrimRight(line, "\r\n")
			if len(line) < 4 {
				t.Fatalf("short reply %q", line)
			}
			fmt.Sscanf(line[:3], "%d", &code)
			lines = append(lines, line[4:])
			if line[3] == ' ' {
				return code, strings.Join(lines, "\n")
			}
		}
	}
	cmd := func(format string, args ...any) (int, string) {
		fmt.Fprintf(c, format+"\r\n", args...)
		return read()
	}
	if code, text := read(); code != 220 {
		return result{"CONNECT", code, text}
	}
	if code, text := cmd("EHLO %s", helo); code != 250 {
		return result{"HELO", code, text}
	}
	if code, text := cmd("MAIL FROM:<%s>", from); code != 250 {
		return result{"MAIL", code, text}
	}
	if code, text := cmd("RCPT TO:<%s>", rcpt); code != 250 {
		return result{"RCPT", code, text}
	}
	if code, text := cmd("DATA"); code != 354 {
		return result{"DATA", code, text}
	}
	var b bytes.Buffer
	for _, line := range strings.SplitAfter(string(msg), "\n") {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.')
		}
		b.WriteString(line)
	}
	c.Write(b.Bytes())
	code, text := cmd(".")
	cmd("QUIT")
	return result{"DATA", code, text}
}

func message(from, subject string) []byte {
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@moat.test>\r\n\r\nHello Bob.\r\n",
		from, rcpt, subject, time.Now().UTC().Format(time.RFC1123Z), time.Now().UnixNano()))
}

// delivered waits for n messages in bob's Maildir and returns the header of the one that has subject.
func (e *env) delivered(t *testing.T, n int, subject string) mail.Header {
	t.Helper()
	h, _ := e.deliveredRaw(t, n, subject)
	return h
}

// deliveredRaw is delivered that also returns the raw message (CRLF line ends).
func (e *env) deliveredRaw(t *testing.T, n int, subject string) (mail.Header, []byte) {
	t.Helper()
	msgs := e.postfix.WaitMessages(t, rcpt, n, 30*time.Second)
	for _, raw := range msgs {
		m, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("delivered message does not parse: %v", err)
		}
		if m.Header.Get("Subject") == subject {
			return m.Header, bytes.ReplaceAll(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
		}
	}
	t.Fatalf("no delivered message with subject %q among %d", subject, len(msgs))
	return nil, nil
}

func TestDNSAuthEndToEnd(t *testing.T) {
	e := start(t)
	addr := e.postfix.Addr
	delivered := 0

	t.Run("signed message delivered with dkim pass", func(t *testing.T) {
		m := message("alice@signed.test", "signed")
		sig, err := dkim.Sign(context.Background(), bytes.NewReader(m), "signed.test", "sel", e.key,
			[]string{"From", "To", "Subject", "Date", "Message-ID"})
		if err != nil {
			t.Fatal(err)
		}
		signed := append([]byte("DKIM-Signature:"+strings.ReplaceAll(sig, "\n", "\r\n")+"\r\n"), m...)
		r := send(t, addr, "127.0.0.1", "client.moat.test", "alice@signed.test", signed)
		if r.code != 250 {
			t.Fatalf("not accepted: %v\n%s", r, e.moat.Log())
		}
		delivered++
		h := e.delivered(t, delivered, "signed")
		ar := strings.Join(h["Authentication-Results"], "\n")
		t.Logf("Authentication-Results: %s", ar)
		for _, want := range []string{"mx.moat.test;", "iprev=pass", "spf=pass smtp.mailfrom=alice@signed.test",
			"dkim=pass header.d=signed.test header.s=sel header.b=", "dmarc=pass header.from=signed.test"} {
			if !strings.Contains(ar, want) {
				t.Errorf("Authentication-Results lacks %q:\n%s", want, ar)
			}
		}
		if n := len(h["Authentication-Results"]); n != 1 {
			t.Errorf("%d Authentication-Results fields, want one", n)
		}
	})

	t.Run("trusted client's mail signed by moat verifies", func(t *testing.T) {
		r := send(t, addr, "127.0.0.4", "client.moat.test", "alice@out.test", message("alice@out.test", "outbound"))
		if r.code != 250 {
			t.Fatalf("not accepted: %v", r)
		}
		delivered++
		h, raw := e.deliveredRaw(t, delivered, "outbound")
		sigs := h["Dkim-Signature"]
		if len(sigs) != 2 {
			t.Fatalf("%d DKIM-Signature fields, want 2 (RSA and Ed25519):\n%s", len(sigs), raw)
		}
		// Our verifier, through the same unbound.
		ar := verifyWithMoat(t, e.dns.Addr, raw)
		for _, want := range []string{"dkim=pass header.d=out.test header.s=rsa", "dkim=pass header.d=out.test header.s=ed"} {
			if !strings.Contains(ar, want) {
				t.Errorf("moat's verifier: %q lacks %q", ar, want)
			}
		}
		// An independent verifier: Perl Mail::DKIM (SpamAssassin's DKIM library), through the same unbound.
		out := verifyWithMailDKIM(t, e.dns.Addr, raw)
		if !strings.Contains(out, "pass d=out.test s=rsa a=rsa-sha256") {
			t.Errorf("Mail::DKIM did not pass moat's RSA signature on the delivered message:\n%s", out)
		}
		if !strings.Contains(out, "pass d=out.test s=ed ") && !strings.Contains(out, "s=ed a=ed25519-sha256 invalid (unsupported algorithm") {
			t.Errorf("Mail::DKIM rejected moat's Ed25519 signature:\n%s", out)
		}
	})

	t.Run("spf fail refused at rcpt", func(t *testing.T) {
		r := send(t, addr, "127.0.0.1", "client.moat.test", "alice@spf-fail.test", message("alice@spf-fail.test", "spf"))
		if r.stage != "RCPT" || r.code != 550 || !strings.HasPrefix(r.text, "5.7.23 SPF fail: spf-fail.test does not designate [127.0.0.1]") ||
			!strings.Contains(r.text, "(ref=") {
			t.Fatalf("got %v, want RCPT 550 5.7.23 from moat", r)
		}
	})

	t.Run("dmarc reject with failing alignment", func(t *testing.T) {
		// SPF passes for the envelope domain good.test, which does not align with From: strict.test; no DKIM.
		r := send(t, addr, "127.0.0.1", "client.moat.test", "alice@good.test", message("alice@strict.test", "dmarc"))
		if r.stage != "DATA" || r.code != 550 || !strings.HasPrefix(r.text, "5.7.1 Message rejected: DMARC policy of strict.test") {
			t.Fatalf("got %v, want DATA 550 5.7.1 DMARC", r)
		}
	})

	t.Run("listed client refused with the configured text", func(t *testing.T) {
		r := send(t, addr, "127.0.0.2", "client.moat.test", "alice@good.test", message("alice@good.test", "dnsbl"))
		if r.stage != "RCPT" || r.code != 554 || !strings.Contains(r.text, "5.7.1 Service unavailable; client [127.0.0.2] blocked: listed by bl.test") {
			t.Fatalf("got %v, want RCPT 554 5.7.1 naming bl.test", r)
		}
	})

	// A display name in a charset Go does not decode made DMARC answer 550 "needs exactly one
	// From: domain" and left outbound mail unsigned.
	t.Run("koi8-r display name: dmarc passes", func(t *testing.T) {
		m := bytes.Replace(message("alice@signed.test", "koi8-r"), []byte("From: <alice@signed.test>"),
			[]byte("From: =?koi8-r?B?8NLJ18XU?= <alice@signed.test>"), 1)
		r := send(t, addr, "127.0.0.1", "client.moat.test", "alice@signed.test", m)
		if r.code != 250 {
			t.Fatalf("not accepted: %v", r)
		}
		delivered++
		h := e.delivered(t, delivered, "koi8-r")
		if ar := strings.Join(h["Authentication-Results"], "\n"); !strings.Contains(ar, "dmarc=pass header.from=signed.test") {
			t.Errorf("Authentication-Results lacks dmarc=pass:\n%s", ar)
		}
	})

	t.Run("iso-2022-jp display name: trusted client's mail signed", func(t *testing.T) {
		m := bytes.Replace(message("alice@out.test", "iso-2022-jp"), []byte("From: <alice@out.test>"),
			[]byte("From: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?= <alice@out.test>"), 1)
		r := send(t, addr, "127.0.0.4", "client.moat.test", "alice@out.test", m)
		if r.code != 250 {
			t.Fatalf("not accepted: %v", r)
		}
		delivered++
		h, raw := e.deliveredRaw(t, delivered, "iso-2022-jp")
		if n := len(h["Dkim-Signature"]); n != 2 {
			t.Fatalf("%d DKIM-Signature fields, want 2:\n%s", n, raw)
		}
		if ar := verifyWithMoat(t, e.dns.Addr, raw); !strings.Contains(ar, "dkim=pass header.d=out.test header.s=rsa") {
			t.Errorf("moat's verifier: %q, want pass", ar)
		}
	})

	// A From: domain in Unicode was looked up raw and found no policy.
	t.Run("unicode From domain: dmarc policy of its A-label applies", func(t *testing.T) {
		r := send(t, addr, "127.0.0.1", "client.moat.test", "alice@good.test", message("alice@bücher.test", "idn"))
		if r.stage != "DATA" || r.code != 550 || !strings.HasPrefix(r.text, "5.7.1 Message rejected: DMARC policy of xn--bcher-kva.test") {
			t.Fatalf("got %v, want DATA 550 5.7.1 DMARC of xn--bcher-kva.test", r)
		}
	})

	t.Run("dns server stops answering: tempfail, never reject", func(t *testing.T) {
		e.dns.Pause()
		defer e.dns.Resume()
		// A sender domain never asked before: SPF cannot be evaluated.
		r := send(t, addr, "127.0.0.1", "client.moat.test", "alice@fresh.test", message("alice@fresh.test", "dns down"))
		if r.code/100 == 5 {
			t.Fatalf("refused with %v while the DNS is down", r)
		}
		if r.stage != "RCPT" || r.code != 451 || !strings.HasPrefix(r.text, "4.7.24") {
			t.Fatalf("got %v, want RCPT 451 4.7.24", r)
		}
		// A client never seen (no cached PTR, DNSBL answer) with a cached SPF domain: the DNS checks that
		// cannot answer record temperror; nothing rejects.
		r = send(t, addr, "127.0.0.3", "other.moat.test", "alice@good.test", message("alice@unknown-dmarc.test", "dns down 2"))
		if r.code/100 == 5 {
			t.Fatalf("refused with %v while the DNS is down", r)
		}
		t.Logf("unknown client while the DNS is down: %v", r)
	})
}
