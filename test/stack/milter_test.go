package stack

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/d--j/go-milter"
)

// rejectMilter refuses blocked@example.test at RCPT time.
type rejectMilter struct{ milter.NoOpMilter }

func (rejectMilter) RcptTo(rcptTo string, _ string, _ milter.Modifier) (*milter.Response, error) {
	if strings.Contains(strings.ToLower(rcptTo), "blocked@example.test") {
		return milter.RejectWithCodeAndReason(550, "5.7.1 blocked by test milter")
	}
	return milter.RespContinue, nil
}

// startTestMilter serves rejectMilter on network/addr.
func startTestMilter(t *testing.T, network, addr string) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	if network == "unix" {
		os.Chmod(addr, 0o666)
	}
	srv := milter.NewServer(milter.WithMilter(func() milter.Milter { return rejectMilter{} }))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func checkMilterWiring(t *testing.T, addr string, wait func(n int)) {
	t.Helper()
	r := SendMail(t, addr, "client.example.test", "bob@sender.test", []string{"blocked@example.test"}, Message("bob@sender.test", "blocked@example.test", "x", "x"))
	if r.Stage != "RCPT" || r.Code != 550 || !strings.HasPrefix(r.Text, "5.7.1 ") || !strings.Contains(r.Text, "blocked by test milter") {
		t.Fatalf("blocked: %v", r)
	}
	r = SendMailEach(t, addr, "client.example.test", "bob@sender.test", []string{"blocked@example.test", "alice@example.test"}, Message("bob@sender.test", "alice@example.test", "x", "x"))
	if !r.OK() || r.RcptReplies[0].Code != 550 || r.RcptReplies[1].Code != 250 {
		t.Fatalf("each: %+v", r)
	}
	wait(1)
}

func TestPostfixMilterUnix(t *testing.T) {
	dir := TempDir(t, "milter")
	sock := filepath.Join(dir, "m.sock")
	startTestMilter(t, "unix", sock)
	pf := StartPostfix(t, PostfixOptions{Milter: "unix:" + sock, Mailboxes: []string{"alice@example.test", "blocked@example.test"}})
	checkMilterWiring(t, pf.Addr, func(n int) { pf.WaitMessages(t, "alice@example.test", n, 20*time.Second) })
}

func TestSendmailMilterInet(t *testing.T) {
	port := FreePort(t)
	startTestMilter(t, "tcp", "127.0.0.1:"+itoa(port))
	s := StartSendmail(t, SendmailOptions{Milter: "inet:127.0.0.1:" + itoa(port), LocalDomains: []string{"example.test"}})
	checkMilterWiring(t, s.Addr, func(n int) { s.WaitMessages(t, "alice@example.test", n, 20*time.Second) })
}

func TestSendmailMilterUnix(t *testing.T) {
	dir := TempDir(t, "milter")
	sock := filepath.Join(dir, "m.sock")
	startTestMilter(t, "unix", sock)
	s := StartSendmail(t, SendmailOptions{Milter: sock, LocalDomains: []string{"example.test"}})
	checkMilterWiring(t, s.Addr, func(n int) { s.WaitMessages(t, "alice@example.test", n, 20*time.Second) })
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestPostfixReloadMilterInet(t *testing.T) {
	port := FreePort(t)
	startTestMilter(t, "tcp", "127.0.0.1:"+itoa(port))
	opts := PostfixOptions{Mailboxes: []string{"alice@example.test", "blocked@example.test"}}
	pf := StartPostfix(t, opts)
	r := SendMail(t, pf.Addr, "client.example.test", "bob@sender.test", []string{"blocked@example.test"}, Message("bob@sender.test", "blocked@example.test", "x", "x"))
	if !r.OK() {
		t.Fatalf("before reload: %v", r)
	}
	opts.Milter = "inet:127.0.0.1:" + itoa(port)
	start := time.Now()
	pf.Reload(t, opts)
	t.Logf("reload took %v", time.Since(start))
	checkMilterWiring(t, pf.Addr, func(n int) { pf.WaitMessages(t, "alice@example.test", n, 20*time.Second) })
}

func TestMiltertestAgainstTestMilter(t *testing.T) {
	dir := TempDir(t, "milter")
	sock := filepath.Join(dir, "m.sock")
	startTestMilter(t, "unix", sock)
	script := `
local conn = mt.connect(SOCK)
if conn == nil then mt.echo("connect failed"); error("connect") end
if mt.conninfo(conn, "client.example.test", "192.0.2.1") ~= nil then error("conninfo") end
if mt.mailfrom(conn, "<bob@sender.test>") ~= nil then error("mailfrom") end
if mt.rcptto(conn, "<blocked@example.test>") ~= nil then error("rcptto") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then mt.echo("expected a reply code"); error("reply") end
mt.echo("rejected as expected")
mt.disconnect(conn)
`
	out, err := Miltertest(t, script, map[string]string{"SOCK": "unix:" + sock}, 20*time.Second)
	if err != nil || !strings.Contains(out, "rejected as expected") {
		t.Fatalf("miltertest: %v\n%s", err, out)
	}
}
