package web

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLinkSignature(t *testing.T) {
	secret := []byte(testSecret)
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	q := signLink(secret, "alice@example.org", now.Add(time.Hour))
	if rcpt, _, err := verifyLink(secret, q, now); err != nil || rcpt != "alice@example.org" {
		t.Fatalf("a fresh link: %q, %v", rcpt, err)
	}
	if _, _, err := verifyLink(secret, q, now.Add(time.Hour)); err != errLinkExpired {
		t.Errorf("at its expiry: %v, want %v", err, errLinkExpired)
	}
	tamper := func(key, value string) url.Values {
		v := url.Values{}
		for k, vs := range q {
			v[k] = append([]string(nil), vs...)
		}
		v.Set(key, value)
		return v
	}
	for name, v := range map[string]url.Values{
		"other recipient": tamper("r", "bob@example.org"),
		"later expiry":    tamper("e", "99999999999"),
		"bad signature":   tamper("s", "AAAA"),
		"no signature":    tamper("s", ""),
	} {
		if _, _, err := verifyLink(secret, v, now); err != errLinkBad {
			t.Errorf("%s: %v, want %v", name, err, errLinkBad)
		}
	}
	if _, _, err := verifyLink([]byte("another key of thirty-two bytes!!"), q, now); err != errLinkBad {
		t.Errorf("another key: %v, want %v", err, errLinkBad)
	}
}

func TestDigestSessionSeesOnlyItsMail(t *testing.T) {
	e := newEnv(t, digestTable)
	e.fake.add(heldRecord("MINE", "s@x.example", "for alice", "alice@example.org", "bob@example.org"), plainMessage)
	e.fake.add(heldRecord("BOBS", "s@x.example", "for bob", "bob@example.org"), plainMessage)
	link := e.srv.digestLinkFor("alice@example.org", e.clock.now().Add(time.Hour), "", "")
	c := e.client(t)
	resp, body := c.get(strings.TrimPrefix(link, "http://127.0.0.1:9358"))
	if resp.StatusCode != 200 || !strings.Contains(body, `http-equiv="refresh"`) {
		t.Fatalf("digest link: %s\n%s", resp.Status, body)
	}
	_, body = c.get("/")
	if !strings.Contains(body, "for alice") || strings.Contains(body, "for bob") || strings.Contains(body, "bob@example.org") {
		t.Fatalf("alice's list shows someone else's mail:\n%s", body)
	}
	if q := e.fake.queries[len(e.fake.queries)-1]; q.RcptExact != "alice@example.org" {
		t.Errorf("query %+v, want RcptExact alice", q)
	}
	if resp, _ := c.get("/msg/BOBS"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("bob's message from alice's session: %s, want 404", resp.Status)
	}
	token := csrfOf(t, body)
	if resp, _ := c.post("/msg/BOBS/act", url.Values{"csrf": {token}, "action": {"release"}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("releasing bob's message: %s, want 404", resp.Status)
	}
	// An action from the digest goes through a confirmation page; only its POST acts, for alice's copy only.
	resp, body = c.get("/msg/MINE/confirm?action=release")
	if resp.StatusCode != 200 || len(e.fake.called()) != 0 || !strings.Contains(body, `action="/msg/MINE/act"`) {
		t.Fatalf("confirmation page: %s, calls %q\n%s", resp.Status, e.fake.called(), body)
	}
	c.post("/msg/MINE/act", url.Values{"csrf": {token}, "action": {"release"}})
	if got := e.fake.called(); len(got) != 1 || got[0] != "release MINE alice@example.org alice@example.org" {
		t.Errorf("calls %q, want alice releasing only her copy", got)
	}
	// A tampered or expired link opens nothing.
	other := e.client(t)
	bad := strings.Replace(strings.TrimPrefix(link, "http://127.0.0.1:9358"), "alice", "bob", 1)
	if resp, _ := other.get(bad); resp.StatusCode != http.StatusForbidden {
		t.Errorf("tampered link: %s, want 403", resp.Status)
	}
	e.clock.add(2 * time.Hour)
	if resp, body := other.get(strings.TrimPrefix(link, "http://127.0.0.1:9358")); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "expired") {
		t.Errorf("expired link: %s, want 403 saying it expired", resp.Status)
	}
}

// smtpSink is a minimal SMTP server that keeps what it is sent, for the digest test.
type smtpSink struct {
	ln   net.Listener
	mu   sync.Mutex
	rcpt []string
	data []string
}

func newSink(t *testing.T) *smtpSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(conn)
		}
	}()
	return s
}

func (s *smtpSink) serve(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	say := func(line string) { conn.Write([]byte(line + "\r\n")) }
	say("220 sink")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"), strings.HasPrefix(cmd, "MAIL"):
			say("250 ok")
		case strings.HasPrefix(cmd, "RCPT"):
			s.mu.Lock()
			s.rcpt = append(s.rcpt, strings.TrimSpace(line[len("RCPT TO:"):]))
			s.mu.Unlock()
			say("250 ok")
		case cmd == "DATA":
			say("354 go on")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil || l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			s.data = append(s.data, b.String())
			s.mu.Unlock()
			say("250 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 no")
		}
	}
}

func TestSendDigests(t *testing.T) {
	sink := newSink(t)
	e := newEnv(t, strings.Replace(digestTable, "127.0.0.1:10025", sink.ln.Addr().String(), 1))
	rec := heldRecord("D1", "spammer@bad.example", "cheap stuff", "alice@example.org")
	e.fake.add(rec, plainMessage)
	old := heldRecord("D0", "x@bad.example", "old", "carol@example.org")
	old.Time = rec.Time.Add(-48 * time.Hour)
	e.fake.add(old, plainMessage)
	n, err := e.srv.SendDigests(context.Background(), rec.Time.Add(-time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("SendDigests = %d, %v; want 1 digest", n, err)
	}
	if len(sink.rcpt) != 1 || sink.rcpt[0] != "<alice@example.org>" {
		t.Fatalf("digest went to %q, want only alice (carol has nothing new, the sender gets nothing)", sink.rcpt)
	}
	mail := sink.data[0]
	for _, want := range []string{"To: alice@example.org", "Auto-Submitted: auto-generated", "cheap stuff", "spammer@bad.example"} {
		if !strings.Contains(mail, want) {
			t.Errorf("digest lacks %q:\n%s", want, mail)
		}
	}
	link := regexp.MustCompile(`http://127\.0\.0\.1:9358(/d\?\S+)`).FindStringSubmatch(mail)
	if link == nil {
		t.Fatalf("no link in the digest:\n%s", mail)
	}
	c := e.client(t)
	if resp, _ := c.get(link[1]); resp.StatusCode != 200 {
		t.Fatalf("the digest's link: %s", resp.Status)
	}
	if _, body := c.get("/"); !strings.Contains(body, "cheap stuff") {
		t.Errorf("the digest's session does not list alice's mail:\n%s", body)
	}
}
