// Package learned_test runs the learned white list end to end: a sender is learned in the SQLite store (as
// the quarantine's "release and white-list the sender" does), and the built moat binary behind a real Postfix,
// with SPF answered by a real unbound and spamd scoring, lets that sender's GTUBE message through when SPF
// proves it, and refuses the identical message from a forged (SPF-fail) sender at the spam threshold.
package learned_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/store"
	"github.com/moatmail/moat/test/stack"
)

const (
	friend    = "friend@remote.example"
	alice     = "alice@moat.test"
	spfPassIP = "127.0.0.2"
	spfFailIP = "127.0.0.3"
	gtube     = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
)

// send plays one transaction from localIP and returns "" when the message was queued, else the refusal.
func send(t *testing.T, addr, localIP, subject string) string {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	refused := func(stage string, err error) string {
		var te *textproto.Error
		if errors.As(err, &te) {
			return fmt.Sprintf("%s %d %s", stage, te.Code, te.Msg)
		}
		t.Fatalf("%s: %v", stage, err)
		return ""
	}
	if err := c.Hello("mx.remote.example"); err != nil {
		return refused("HELO", err)
	}
	if err := c.Mail(friend); err != nil {
		return refused("MAIL", err)
	}
	if err := c.Rcpt(alice); err != nil {
		return refused("RCPT", err)
	}
	w, err := c.Data()
	if err != nil {
		return refused("DATA", err)
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%d@remote.example>\r\nDate: %s\r\n\r\n%s\r\n",
		friend, alice, subject, time.Now().UnixNano(), time.Now().Format(time.RFC1123Z), gtube)
	if err := w.Close(); err != nil {
		return refused("DATA", err)
	}
	c.Quit()
	return ""
}

func TestLearnedSender(t *testing.T) {
	stack.Need(t, "postfix", "unbound", "spamd")
	dns := stack.StartDNS(t, []string{`remote.example. 300 IN TXT "v=spf1 ip4:` + spfPassIP + ` -all"`})
	spamd := stack.StartSpamd(t)
	dir := stack.TempDir(t, "learned")
	db := filepath.Join(dir, "moat.db")
	st, err := store.OpenSQLite(context.Background(), db, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.LearnSender(context.Background(), friend, "operator@moat.test", time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	st.Close()
	sock := filepath.Join(dir, "moat.sock")
	conf := filepath.Join(dir, "moat.toml")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`[milter]
listen = ["unix:%s"]
socket_mode = "0666"

[log]
level = "debug"

[dns]
servers = [%q]
timeout = "1s"

[store]
path = %q

[policy]
reject_score = 5.0

[checks.spf]
# A failing SPF result only scores, so that the spam threshold decides.
fail = "score:1"
check_helo = false

[checks.senderlists]
learned = true

[checks.spamd]
servers = ["tcp:%s"]
timeout = "60s"
`, sock, dns.Addr, db, spamd.Addr)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	m := stack.StartMoat(t, conf, "unix:"+sock)
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + sock, Mailboxes: []string{alice}})

	// Forged: the identical message from an address SPF fails is refused at the spam threshold.
	r := send(t, pf.Addr, spfFailIP, "forged")
	if !strings.HasPrefix(r, "DATA 550") || !strings.Contains(r, "ref=") {
		t.Fatalf("forged learned sender: %q, want 550 at DATA\n%s", r, m.Log())
	}
	// The log must say why the learned sender did not count.
	m.WaitLog(t, "eom(senderlists=unproven", 10*time.Second)
	// Proven by SPF: white-listed, spam scoring skipped, delivered.
	if r := send(t, pf.Addr, spfPassIP, "proven"); r != "" {
		t.Fatalf("proven learned sender: %q, want queued\n%s", r, m.Log())
	}
	msgs := pf.WaitMessages(t, alice, 1, 30*time.Second)
	head := string(msgs[0])
	if !strings.Contains(head, "Subject: proven") || !strings.Contains(head, "source=learned") {
		t.Fatalf("delivered message:\n%s", head)
	}
}
