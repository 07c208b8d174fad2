package stack

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestFreePort(t *testing.T) {
	a, b := FreePort(t), FreePort(t)
	if a == b || a == 0 {
		t.Fatalf("FreePort gave %d and %d", a, b)
	}
}

func TestDNS(t *testing.T) {
	start := time.Now()
	d := StartDNS(t, []string{
		`example.test. 300 IN TXT "v=spf1 -all"`,
		`mail.example.test. A 192.0.2.25`,
		`4.3.2.1.in-addr.arpa. PTR mail.example.test.`,
		`example.com. MX 10 mx.example.com.`,
		TXTRecord("k1._domainkey.example.test", strings.Repeat("a", 300)+"b"),
	})
	t.Logf("unbound ready in %v", time.Since(start))
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("example.test.", dns.TypeTXT)
		r, _, err := c.Exchange(m, d.Addr)
		if err != nil {
			t.Fatalf("%s TXT: %v", proto, err)
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s TXT: %v", proto, r)
		}
		if txt := r.Answer[0].(*dns.TXT); strings.Join(txt.Txt, "") != "v=spf1 -all" {
			t.Fatalf("%s TXT = %q", proto, txt.Txt)
		}
		m = new(dns.Msg)
		m.SetQuestion("nothing.example.test.", dns.TypeA)
		r, _, err = c.Exchange(m, d.Addr)
		if err != nil || r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s unknown name: %v %v", proto, r, err)
		}
		m = new(dns.Msg)
		m.SetQuestion("www.example.com.", dns.TypeA)
		r, _, err = c.Exchange(m, d.Addr)
		if err != nil || r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s outside name: %v %v", proto, r, err)
		}
		m = new(dns.Msg)
		m.SetQuestion("4.3.2.1.in-addr.arpa.", dns.TypePTR)
		r, _, err = c.Exchange(m, d.Addr)
		if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "mail.example.test." {
			t.Fatalf("%s PTR: %v %v", proto, r, err)
		}
		m = new(dns.Msg)
		m.SetQuestion("example.com.", dns.TypeMX)
		r, _, err = c.Exchange(m, d.Addr)
		if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "mx.example.com." {
			t.Fatalf("%s MX: %v %v", proto, r, err)
		}
		m = new(dns.Msg)
		m.SetQuestion("example.com.", dns.TypeA)
		r, _, err = c.Exchange(m, d.Addr)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Fatalf("%s NODATA: %v %v", proto, r, err)
		}
		m = new(dns.Msg)
		m.SetQuestion("k1._domainkey.example.test.", dns.TypeTXT)
		r, _, err = c.Exchange(m, d.Addr)
		if err != nil || len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "") != strings.Repeat("a", 300)+"b" {
			t.Fatalf("%s long TXT: %v %v", proto, r, err)
		}
		m = new(dns.Msg)
		m.SetQuestion("9.9.9.10.in-addr.arpa.", dns.TypePTR)
		r, _, err = c.Exchange(m, d.Addr)
		if err != nil || r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s unknown PTR: %v %v", proto, r, err)
		}
	}
	// Paused: the server holds its port but answers nothing.
	d.Pause()
	pc := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	pm := new(dns.Msg)
	pm.SetQuestion("example.test.", dns.TypeTXT)
	if r, _, err := pc.Exchange(pm, d.Addr); err == nil {
		t.Fatalf("paused DNS answers: %v", r)
	}
	d.Resume()
	pc.Timeout = 3 * time.Second
	if _, _, err := pc.Exchange(pm, d.Addr); err != nil {
		t.Fatalf("resumed DNS: %v", err)
	}
	d.Stop()
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("example.test.", dns.TypeTXT)
	if r, _, err := c.Exchange(m, d.Addr); err == nil {
		t.Fatalf("stopped DNS still answers: %v", r)
	}
}

func TestRedis(t *testing.T) {
	start := time.Now()
	r := StartRedis(t)
	t.Logf("redis ready in %v", time.Since(start))
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PING\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING: %q %v", line, err)
	}
}

func TestPostfix(t *testing.T) {
	start := time.Now()
	pf := StartPostfix(t, PostfixOptions{Mailboxes: []string{"alice@example.test"}})
	t.Logf("postfix ready in %v", time.Since(start))
	start = time.Now()
	r := SendMail(t, pf.Addr, "client.example.test", "bob@sender.test", []string{"alice@example.test"},
		Message("bob@sender.test", "alice@example.test", "hello", "hello alice"))
	if !r.OK() || r.Code != 250 {
		t.Fatalf("send: %v\n%s", r, pf.Log())
	}
	msgs := pf.WaitMessages(t, "alice@example.test", 1, 20*time.Second)
	t.Logf("delivered in %v", time.Since(start))
	if !strings.Contains(string(msgs[0]), "hello alice") {
		t.Fatalf("message: %s", msgs[0])
	}
	// Unknown mailbox in a local domain is refused by Postfix; relaying too.
	r = SendMail(t, pf.Addr, "client.example.test", "bob@sender.test", []string{"nobody@example.test"}, Message("a@b.test", "c@d.test", "x", "x"))
	if r.Stage != "RCPT" || r.Code != 550 {
		t.Fatalf("unknown user: %v", r)
	}
	r = SendMail(t, pf.Addr, "client.example.test", "bob@sender.test", []string{"someone@elsewhere.test"}, Message("a@b.test", "c@d.test", "x", "x"))
	if r.Stage != "RCPT" || r.Code/100 != 5 {
		t.Fatalf("relay: %v", r)
	}
	r = SendMailEach(t, pf.Addr, "client.example.test", "bob@sender.test", []string{"nobody@example.test", "alice@example.test"}, Message("a@b.test", "c@d.test", "each", "each"))
	if !r.OK() || len(r.RcptReplies) != 2 || r.RcptReplies[0].Code != 550 || r.RcptReplies[1].Code != 250 {
		t.Fatalf("each: %+v", r)
	}
	pf.WaitMessages(t, "alice@example.test", 2, 20*time.Second)
}

func TestPostfixRelayAll(t *testing.T) {
	pf := StartPostfix(t, PostfixOptions{RelayAll: true, Mailboxes: []string{"alice@example.test"}})
	r := SendMail(t, pf.Addr, "client.example.test", "bob@sender.test", []string{"someone@elsewhere.test"}, Message("a@b.test", "c@d.test", "x", "x"))
	if !r.OK() {
		t.Fatalf("relay: %v", r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(pf.Log(), "relay disabled in tests") {
		if time.Now().After(deadline) {
			t.Fatalf("relayed mail not discarded:\n%s", pf.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// instream scans data with clamd's INSTREAM command and returns the reply.
func instream(t *testing.T, network, addr string, data []byte) string {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("zINSTREAM\x00"))
	for len(data) > 0 {
		n := min(len(data), 4096)
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(n))
		c.Write(l[:])
		c.Write(data[:n])
		data = data[n:]
	}
	c.Write([]byte{0, 0, 0, 0})
	reply, err := bufio.NewReader(c).ReadString(0)
	if err != nil {
		t.Fatalf("INSTREAM reply: %q %v", reply, err)
	}
	return strings.TrimRight(reply, "\x00")
}

func TestClamd(t *testing.T) {
	start := time.Now()
	c := StartClamd(t, ClamdOptions{StreamMaxLength: "1M", ExtraSigs: map[string]string{"extra.ndb": "Moat-Extra-Sig:0:*:" + fmt.Sprintf("%x", "moat-extra-signature-test") + "\n"}})
	t.Logf("clamd ready in %v", time.Since(start))
	if got := instream(t, "unix", c.Socket, []byte(EICAR)); !strings.Contains(got, "FOUND") {
		t.Errorf("EICAR over unix: %q", got)
	}
	if got := instream(t, "tcp", c.TCPAddr, []byte("hello\n"+EICAR+"\nbye\n")); !strings.Contains(got, ClamEicarBodySig+".UNOFFICIAL FOUND") {
		t.Errorf("EICAR inside text over tcp: %q", got)
	}
	if got := instream(t, "tcp", c.TCPAddr, []byte("a clean message\n")); got != "stream: OK" {
		t.Errorf("clean: %q", got)
	}
	if got := instream(t, "tcp", c.TCPAddr, []byte("xx moat-extra-signature-test xx")); !strings.Contains(got, "Moat-Extra-Sig.UNOFFICIAL FOUND") {
		t.Errorf("extra sig: %q", got)
	}
	if got := instream(t, "tcp", c.TCPAddr, make([]byte, 2<<20)); !strings.Contains(got, "size limit exceeded") {
		t.Errorf("over StreamMaxLength: %q", got)
	}
	if b, err := os.ReadFile(ClamAVTestFilesDir + "/clam.zip"); err == nil {
		if got := instream(t, "tcp", c.TCPAddr, b); !strings.Contains(got, ClamTestFileSig+".UNOFFICIAL FOUND") {
			t.Errorf("clam.zip: %q", got)
		}
	} else if InCI() {
		t.Errorf("clamav-testfiles: %v", err)
	}
}

func TestSpamd(t *testing.T) {
	start := time.Now()
	s := StartSpamd(t)
	t.Logf("spamd ready in %v", time.Since(start))
	check := func(body string) string {
		msg := "From: a@b.test\r\nTo: c@d.test\r\nSubject: test\r\n\r\n" + body + "\r\n"
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		fmt.Fprintf(c, "CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n%s", len(msg), msg)
		b := make([]byte, 4096)
		var out []byte
		for {
			n, err := c.Read(b)
			out = append(out, b[:n]...)
			if err != nil {
				break
			}
		}
		return string(out)
	}
	start = time.Now()
	got := check(GTUBE)
	t.Logf("GTUBE check in %v", time.Since(start))
	if !strings.Contains(got, "SPAMD/1.") || !strings.Contains(got, "Spam: True ; 10") {
		t.Fatalf("GTUBE: %q\n%s", got, s.Log())
	}
	var score float64
	if i := strings.Index(got, "Spam: True ; "); i >= 0 {
		fmt.Sscanf(got[i+len("Spam: True ; "):], "%g", &score)
	}
	if score < 1000 {
		t.Fatalf("GTUBE score %v: %q", score, got)
	}
	if got := check("just a friendly note about lunch"); !strings.Contains(got, "Spam: False") {
		t.Fatalf("ham: %q", got)
	}
	// TELL (learning) works and sa-learn sees the same Bayes database.
	msg := "From: a@b.test\r\nTo: c@d.test\r\nSubject: cheap pills\r\n\r\nbuy cheap pills now, limited offer on pills\r\n"
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(c, "TELL SPAMC/1.5\r\nMessage-class: spam\r\nSet: local\r\nContent-length: %d\r\n\r\n%s", len(msg), msg)
	reply, _ := io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(reply), "DidSet: local") {
		t.Fatalf("TELL: %q\n%s", reply, s.Log())
	}
	if m := s.DumpMagic(t); !regexp.MustCompile(`\s1\s+0\s+non-token data: nspam`).MatchString(m) {
		t.Fatalf("dump magic after TELL: %s", m)
	}
}

func TestSendmail(t *testing.T) {
	start := time.Now()
	s := StartSendmail(t, SendmailOptions{LocalDomains: []string{"example.test"}})
	t.Logf("sendmail ready in %v", time.Since(start))
	start = time.Now()
	r := SendMail(t, s.Addr, "client.example.test", "bob@sender.test", []string{"alice@example.test"},
		Message("bob@sender.test", "alice@example.test", "hello", "hello alice via sendmail"))
	if !r.OK() {
		t.Fatalf("send: %v\n%s", r, s.Log())
	}
	msgs := s.WaitMessages(t, "alice@example.test", 1, 20*time.Second)
	t.Logf("delivered in %v", time.Since(start))
	if !strings.Contains(string(msgs[0]), "hello alice via sendmail") {
		t.Fatalf("message: %s", msgs[0])
	}
}

func TestSendmailMilterSpec(t *testing.T) {
	for in, want := range map[string]string{
		"inet:127.0.0.1:9999":  "inet:9999@127.0.0.1",
		"inet:9999@127.0.0.1":  "inet:9999@127.0.0.1",
		"/run/moat/moat.sock":  "unix:/run/moat/moat.sock",
		"unix:/run/moat.sock":  "unix:/run/moat.sock",
		"local:/run/moat.sock": "local:/run/moat.sock",
	} {
		if got := SendmailMilterSpec(in); got != want {
			t.Errorf("SendmailMilterSpec(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMiltertestInstalled(t *testing.T) {
	Need(t, "miltertest")
}

// recTB records Fatalf and Skipf instead of stopping the test.
type recTB struct {
	testing.TB
	fatal, skip string
}

func (r *recTB) Helper()                           {}
func (r *recTB) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recTB) Skipf(format string, args ...any)  { r.skip = fmt.Sprintf(format, args...) }

func TestNeed(t *testing.T) {
	t.Setenv("CI", "")
	r := &recTB{TB: t}
	Need(r, "sh", "no-such-binary-moat")
	if r.fatal != "" || !strings.Contains(r.skip, "no-such-binary-moat") {
		t.Fatalf("without CI: fatal=%q skip=%q", r.fatal, r.skip)
	}
	t.Setenv("CI", "true")
	r = &recTB{TB: t}
	Need(r, "sh", "no-such-binary-moat")
	if r.skip != "" || !strings.Contains(r.fatal, "no-such-binary-moat") {
		t.Fatalf("with CI=true: fatal=%q skip=%q", r.fatal, r.skip)
	}
	r = &recTB{TB: t}
	Need(r, "sh", "postconf")
	if r.skip != "" || r.fatal != "" {
		t.Fatalf("present binaries: fatal=%q skip=%q", r.fatal, r.skip)
	}
}
