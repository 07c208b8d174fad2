// Package correspondents_test runs trusted correspondents end to end: real Postfix instances whose local users
// submit on a submission service of their own with SMTP AUTH required (a Dovecot-protocol stand-in as the SASL
// backend), as on port 587, while remote mail arrives on the MX service; the built moat binary as their milter,
// SPF answered by a real unbound, the state in one real redis-server shared by two moat instances (and in
// SQLite for the expiry test).
//
//	alice (AUTH) → Postfix A, submission → moat A ─┐
//	                                                ├→ redis-server (correspondents, greylisting)
//	bob (127.0.0.2/.3) → Postfix B, MX → moat B ────┘         ↓ accepted: Maildir of alice@moat.test on B
package correspondents_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moatmail/moat/rules/correspondents"
	"github.com/moatmail/moat/test/stack"
)

const (
	alice = "alice@moat.test"
	carol = "carol@moat.test"
	delay = 2 * time.Second
	// SPF of every remote test domain allows 127.0.0.2 and fails everything else.
	spfPassIP = "127.0.0.2"
	spfFailIP = "127.0.0.3"
)

var remoteDomains = []string{"remote.example", "thread.example", "a.example", "b.example", "c.example", "z.example"}

func dnsRecords() []string {
	var rr []string
	for _, d := range remoteDomains {
		rr = append(rr, d+`. 300 IN TXT "v=spf1 ip4:`+spfPassIP+` -all"`)
	}
	return rr
}

type instance struct {
	name, conf, sock string
	moat             *stack.Moat
	pf               *stack.Postfix
}

// startInstance starts moat (SPF, correspondents, greylisting over storeTOML) and a Postfix that delivers mail
// for alice and carol, with a submission service that requires SMTP AUTH and relays for authenticated clients.
func startInstance(t *testing.T, name, dnsAddr, storeTOML, corrTOML string) *instance {
	t.Helper()
	dir := stack.TempDir(t, "corr-"+name)
	in := &instance{name: name, conf: filepath.Join(dir, "moat.toml"), sock: filepath.Join(dir, "moat.sock")}
	conf := fmt.Sprintf(`[milter]
listen = ["unix:%s"]
socket_mode = "0666"

[log]
level = "debug"

[dns]
servers = [%q]
timeout = "1s"

%s
[checks.spf]
# A failing SPF result only scores here, so that the message reaches greylisting.
fail = "score:3"
check_helo = false

[checks.correspondents]
local_domains = ["moat.test"]
%s

[checks.greylist]
delay = "%s"
auto_whitelist = 0
`, in.sock, dnsAddr, storeTOML, corrTOML, delay)
	if err := os.WriteFile(in.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	in.moat = stack.StartMoat(t, in.conf, "unix:"+in.sock)
	in.pf = stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + in.sock, Mailboxes: []string{alice, carol},
		Submission: true})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("moat %s log (tail):\n%s", name, tail(in.moat.Log(), 60))
		}
	})
	return in
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// result is what the SMTP client saw: the stage that ended the transaction and its reply.
type result struct {
	stage string // RCPT (refused), DONE (queued), or where it failed
	code  int
	text  string
}

func (r result) String() string { return fmt.Sprintf("%s %d %s", r.stage, r.code, r.text) }

type mail struct {
	localIP, authUser, from, to string
	header                      string // extra header fields, CRLF-terminated
	subject, msgID              string
	wantAuthOffered             bool // without authUser: the server is expected to offer AUTH anyway
}

// send plays one SMTP transaction against in's Postfix: on the submission service when the mail is
// authenticated, else on the MX service.
func send(t *testing.T, in *instance, m mail) result {
	t.Helper()
	to := in.pf.Addr
	if m.authUser != "" {
		to = in.pf.SubmissionAddr
	}
	return sendTo(t, to, m)
}

// sendTo plays one SMTP transaction against the smtpd at address to.
func sendTo(t *testing.T, to string, m mail) result {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if m.localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(m.localIP)}
	}
	conn, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatalf("dial %s: %v", to, err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	// "localhost" lets net/smtp use PLAIN without TLS.
	c, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fail := func(stage string, err error) result {
		var te *textproto.Error
		if errors.As(err, &te) {
			return result{stage, te.Code, te.Msg}
		}
		t.Fatalf("%s: %v", stage, err)
		return result{}
	}
	if err := c.Hello("mx.client.example"); err != nil {
		return fail("HELO", err)
	}
	if ok, _ := c.Extension("AUTH"); ok != (m.authUser != "" || m.wantAuthOffered) {
		return result{stage: "EHLO", text: fmt.Sprintf("AUTH offered: %v", ok)}
	}
	if m.authUser != "" {
		if err := c.Auth(smtp.PlainAuth("", m.authUser, stack.SASLPassword, "localhost")); err != nil {
			return fail("AUTH", err)
		}
	}
	if err := c.Mail(m.from); err != nil {
		return fail("MAIL", err)
	}
	if err := c.Rcpt(m.to); err != nil {
		return fail("RCPT", err)
	}
	w, err := c.Data()
	if err != nil {
		return fail("DATA", err)
	}
	if m.msgID == "" {
		m.msgID = fmt.Sprintf("%d@client.example", time.Now().UnixNano())
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s>\r\nDate: %s\r\n%s\r\nhello\r\n",
		m.from, m.to, m.subject, m.msgID, time.Now().Format(time.RFC1123Z), m.header)
	if err := w.Close(); err != nil {
		return fail("DATA", err)
	}
	c.Quit()
	return result{stage: "DONE", code: 250}
}

func wantQueued(t *testing.T, in *instance, r result, what string) {
	t.Helper()
	if r.stage != "DONE" {
		t.Fatalf("%s: %v, want the message queued\nmoat %s:\n%s", what, r, in.name, tail(in.moat.Log(), 30))
	}
}

func wantGreylisted(t *testing.T, r result, what string) {
	t.Helper()
	if r.stage != "RCPT" || r.code != 451 || !strings.Contains(r.text, "4.7.1 Greylisted") || !strings.Contains(r.text, "ref=") {
		t.Fatalf("%s: %v, want 451 4.7.1 Greylisted at RCPT", what, r)
	}
}

// delivered waits for the message with the given subject in the Maildir of addr and returns its header.
func delivered(t *testing.T, in *instance, addr, subject string) string {
	t.Helper()
	dir := filepath.Join(in.pf.Maildir(addr), "new")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			head, _, _ := strings.Cut(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n\n")
			if strings.Contains(head, "\nSubject: "+subject+"\n") {
				return strings.ReplaceAll(head, "\n\t", " ")
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no message %q for %s after 30s\n%s", subject, addr, tail(in.pf.Log(), 30))
	return ""
}

func xMoat(t *testing.T, head string) string {
	t.Helper()
	for _, l := range strings.Split(head, "\n") {
		if v, ok := strings.CutPrefix(l, "X-Moat: "); ok {
			return v
		}
	}
	t.Fatalf("no X-Moat in\n%s", head)
	return ""
}

// cli runs `moat correspondents -c CONF ARGS` and returns its output; a non-zero exit fails the test.
func cli(t *testing.T, in *instance, args ...string) string {
	t.Helper()
	out, err := exec.Command(stack.BuildMoat(t), append([]string{"correspondents", "-c", in.conf}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("moat correspondents %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// waitListed waits until `moat correspondents list USER` on in shows every key of want (the writer is
// asynchronous: recording never holds up the SMTP session).
func waitListed(t *testing.T, in *instance, user string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := cli(t, in, "list", user)
		missing := ""
		for _, k := range want {
			if !strings.Contains(out, k) {
				missing = k
			}
		}
		if missing == "" {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s of %s never listed:\n%s", missing, user, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func randomPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "moatcorr:" + hex.EncodeToString(b[:]) + ":"
}

// TestCorrespondents: alice submits a message to bob through instance A; instance B, sharing A's Redis, lets
// bob's proven reply skip greylisting and scores it, greylists the same reply failing SPF, gives nothing to a
// stranger quoting the Message-ID alice sent bob, counts a reply from a correspondent pushed out of the
// per-user bound only when proven, and forgets on request.
func TestCorrespondents(t *testing.T) {
	stack.Need(t, "postfix", "unbound", "redis-server")
	dns := stack.StartDNS(t, dnsRecords())
	rds := stack.StartRedis(t)
	prefix := randomPrefix()
	storeTOML := fmt.Sprintf("[store]\nbackend = \"redis\"\nredis_addr = %q\nredis_prefix = %q\n", rds.Addr, prefix)
	corr := "max_per_user = 4"
	a := startInstance(t, "a", dns.Addr, storeTOML, corr)
	b := startInstance(t, "b", dns.Addr, storeTOML, corr)

	// 0. The submission service requires AUTH; the MX service does not offer it and relays for nobody.
	if r := sendTo(t, a.pf.SubmissionAddr, mail{from: alice, to: "bob@remote.example", subject: "no auth",
		wantAuthOffered: true}); r.stage != "RCPT" || r.code/100 != 5 {
		t.Fatalf("submission without AUTH: %v, want refused at RCPT", r)
	}
	if r := sendTo(t, a.pf.Addr, mail{from: alice, to: "bob@remote.example", subject: "via mx"}); r.stage != "RCPT" ||
		!strings.Contains(r.text, "Relay access denied") {
		t.Fatalf("relay through the MX service: %v, want refused", r)
	}

	// 1. alice, authenticated on A's submission service, writes to bob; the keys show on B (one Redis).
	wantQueued(t, a, send(t, a, mail{authUser: "alice", from: alice, to: "bob@remote.example", subject: "hello bob",
		msgID: "alice-1@moat.test"}), "alice to bob")
	waitListed(t, b, alice, correspondents.AddressKey("bob@remote.example"), correspondents.DomainKey("remote.example"),
		correspondents.ReplyKey("alice-1@moat.test", "bob@remote.example"))

	// No address, domain or Message-ID in clear in Redis.
	rc := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), prefix+"corr:*").Result()
	if err != nil || len(keys) != 2 {
		t.Fatalf("redis keys %v, %v: want alice's two sets (correspondents, sent Message-IDs)", keys, err)
	}
	var members []string
	for _, k := range keys {
		m, _ := rc.ZRange(context.Background(), k, 0, -1).Result()
		members = append(members, m...)
	}
	if len(members) != 3 {
		t.Fatalf("redis members %v, want 3", members)
	}
	for _, s := range append(members, keys...) {
		for _, clear := range []string{"alice", "bob", "remote", "moat.test"} {
			if strings.Contains(s, clear) {
				t.Fatalf("redis holds %q in clear: %q", clear, s)
			}
		}
	}

	// 2. bob's reply from an SPF-pass address, on B: not greylisted, scored, correspondent=yes.
	reply := "In-Reply-To: <alice-1@moat.test>\r\n"
	wantQueued(t, b, send(t, b, mail{localIP: spfPassIP, from: "bob@remote.example", to: alice, subject: "re: hello",
		header: reply}), "bob's proven reply")
	xm := xMoat(t, delivered(t, b, alice, "re: hello"))
	if !strings.Contains(xm, "correspondent=yes") || !strings.Contains(xm, "score=-3.0") ||
		!strings.Contains(xm, "correspondents:pass") {
		t.Fatalf("proven reply: X-Moat: %s", xm)
	}

	// 3. The same reply from an address failing SPF: greylisted.
	wantGreylisted(t, send(t, b, mail{localIP: spfFailIP, from: "bob@remote.example", to: alice, subject: "re: forged",
		header: reply}), "bob's reply failing SPF")

	// 4. dan, whom alice never wrote to, quotes the Message-ID alice sent bob: greylisted like any stranger at
	// RCPT; after the retry, nothing even with SPF pass (the Message-ID was sent to bob, not to dan).
	dan := mail{localIP: spfPassIP, from: "dan@thread.example", to: alice, subject: "dan proven", header: reply}
	wantGreylisted(t, send(t, b, dan), "dan's first attempt")

	// 5. The per-user bound: carol writes three messages (three keys each: address, domain, Message-ID) under
	// max_per_user = 4; the oldest address and domain go, and that recipient is greylisted again while the
	// latest is not. The Message-IDs are bounded apart: x1's reply to carol's message still counts, with proof.
	for i, to := range []string{"x1@a.example", "x2@b.example", "x3@c.example"} {
		wantQueued(t, a, send(t, a, mail{authUser: "carol", from: carol, to: to, subject: fmt.Sprintf("carol %d", i),
			msgID: fmt.Sprintf("carol-%d@moat.test", i)}), "carol to "+to)
		// One at a time, so that the order of the writes is the order of the messages.
		waitListed(t, a, carol, correspondents.AddressKey(to))
	}
	out := waitListed(t, a, carol, correspondents.AddressKey("x3@c.example"), correspondents.ReplyKey("carol-0@moat.test", "x1@a.example"))
	if !strings.Contains(out, "4 correspondents of "+carol+", 3 sent Message-IDs") || strings.Contains(out, correspondents.AddressKey("x1@a.example")) {
		t.Fatalf("bounded list:\n%s", out)
	}
	x1 := func(ip, subject string) mail {
		return mail{localIP: ip, from: "x1@a.example", to: carol, subject: subject, header: "In-Reply-To: <carol-0@moat.test>\r\n"}
	}
	wantGreylisted(t, send(t, b, x1(spfPassIP, "x1 proven")), "evicted x1")
	wantGreylisted(t, send(t, b, x1(spfFailIP, "x1 unproven")), "evicted x1 failing SPF")
	wantQueued(t, b, send(t, b, mail{localIP: spfPassIP, from: "x3@c.example", to: carol, subject: "x3"}), "kept x3")

	time.Sleep(delay + 500*time.Millisecond)
	wantQueued(t, b, send(t, b, dan), "dan's retry")
	if xm := xMoat(t, delivered(t, b, alice, "dan proven")); strings.Contains(xm, "correspondent=") || strings.Contains(xm, "score=-3.0") ||
		!strings.Contains(xm, "correspondents:none") {
		t.Fatalf("dan quoting bob's Message-ID: X-Moat: %s, want no correspondent", xm)
	}
	wantQueued(t, b, send(t, b, x1(spfPassIP, "x1 proven")), "x1's retry")
	wantQueued(t, b, send(t, b, x1(spfFailIP, "x1 unproven")), "x1's retry failing SPF")
	// score=-3.0, not domain_score: the address and the domain are gone, the reply matched.
	if xm := xMoat(t, delivered(t, b, carol, "x1 proven")); !strings.Contains(xm, "correspondent=yes") || !strings.Contains(xm, "score=-3.0") {
		t.Fatalf("x1's proven reply: X-Moat: %s", xm)
	}
	xm = xMoat(t, delivered(t, b, carol, "x1 unproven"))
	if !strings.Contains(xm, "correspondent=unproven-spf-fail-no-aligned-dkim") || !strings.Contains(xm, "score=3.0") {
		t.Fatalf("x1's unproven reply: X-Moat: %s (want the reason and SPF's score only)", xm)
	}

	// 6. Forgetting bob (on A): his address, domain and the Message-ID sent to him; his next proven reply to
	// alice is greylisted on B.
	if out := cli(t, a, "forget", alice, "bob@remote.example"); !strings.Contains(out, "3 keys deleted") {
		t.Fatalf("forget: %s", out)
	}
	wantGreylisted(t, send(t, b, mail{localIP: spfPassIP, from: "bob@remote.example", to: alice, subject: "after forget",
		header: reply}), "forgotten bob")
	if out := cli(t, b, "list", alice); !strings.Contains(out, "0 correspondents of "+alice+", 0 sent Message-IDs") {
		t.Fatalf("after forgetting bob:\n%s", out)
	}
	if out := cli(t, a, "forget", carol); !strings.Contains(out, "7 keys deleted") {
		t.Fatalf("forget all of carol (4 addresses and domains, 3 Message-IDs): %s", out)
	}
	if out := cli(t, b, "list", carol); !strings.Contains(out, "0 correspondents") {
		t.Fatalf("after forgetting all:\n%s", out)
	}
}

// TestExpiryAndImport: in SQLite, with expiry = "3s", a correspondent is forgotten once it is quiet for
// expiry; an imported address book counts like written-to addresses.
func TestExpiryAndImport(t *testing.T) {
	stack.Need(t, "postfix", "unbound")
	dns := stack.StartDNS(t, dnsRecords())
	dir := stack.TempDir(t, "corr-sqlite")
	c := startInstance(t, "c", dns.Addr, fmt.Sprintf("[store]\npath = %q\n", filepath.Join(dir, "moat.db")), `expiry = "3s"`)

	wantQueued(t, c, send(t, c, mail{authUser: "alice", from: alice, to: "bob@remote.example", subject: "hi"}), "alice to bob")
	waitListed(t, c, alice, correspondents.AddressKey("bob@remote.example"))
	wantQueued(t, c, send(t, c, mail{localIP: spfPassIP, from: "bob@remote.example", to: alice, subject: "bob 1"}), "bob within expiry")
	// Quiet for longer than expiry (bob's message refreshed the keys when it was accepted).
	time.Sleep(3500 * time.Millisecond)
	if out := cli(t, c, "list", alice); !strings.Contains(out, "0 correspondents") {
		t.Fatalf("after expiry:\n%s", out)
	}
	wantGreylisted(t, send(t, c, mail{localIP: spfPassIP, from: "bob@remote.example", to: alice, subject: "bob 2"}), "bob after expiry")

	book := filepath.Join(dir, "book.txt")
	os.WriteFile(book, []byte("# alice's address book\nZed <zed@z.example>\n"), 0o644)
	if out := cli(t, c, "import", alice, book); !strings.Contains(out, "imported 2 keys") {
		t.Fatalf("import: %s", out)
	}
	wantQueued(t, c, send(t, c, mail{localIP: spfPassIP, from: "zed@z.example", to: alice, subject: "from zed"}), "imported zed")
	os.WriteFile(book, []byte("not an address\n"), 0o644)
	out, err := exec.Command(stack.BuildMoat(t), "correspondents", "-c", c.conf, "import", alice, book).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "book.txt:1") {
		t.Fatalf("bad address book: %v %s", err, out)
	}
}
