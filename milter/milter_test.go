package milter

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	_ "github.com/moatmail/moat/test/scriptedcheck"
)

// syncBuffer is a log sink the test reads while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testServer struct {
	srv  *Server
	path string
	log  *syncBuffer
}

const testConfig = `
[policy]
authserv_id = "mx.example.test"

[checks.test]
reject_to = ["bad@example.test"]
tempfail_to = ["later@example.test"]
panic_to = ["boom@example.test"]
reject_body = "REJECT-ME"
panic_body = "PANIC-ME"
text = "scripted answer"
header_name = "X-Test-Check"
header_value = "seen"
`

// mustServe starts moat's milter server on a unix socket with the given configuration.
func mustServe(t testing.TB, toml string) *testServer {
	t.Helper()
	f, err := config.Parse("test.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	eng, err := policy.Build(f, log, policytest.Services())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ProgressInterval = config.Duration(50 * time.Millisecond)
	path := filepath.Join(t.TempDir(), "moat.sock")
	cfg.Listen = []string{"unix:" + path}
	lns, err := Listen(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(cfg, eng, log)
	for _, ln := range lns {
		go func() { _ = srv.Serve(ln) }()
	}
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	return &testServer{srv: srv, path: path, log: logs}
}

func (ts *testServer) session(t *testing.T, macros *gomilter.MacroBag) *gomilter.ClientSession {
	t.Helper()
	c := gomilter.NewClient("unix", ts.path)
	s, err := c.Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustAct(t *testing.T) func(*gomilter.Action, error) *gomilter.Action {
	return func(act *gomilter.Action, err error) *gomilter.Action {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return act
	}
}

func wantContinue(t *testing.T, what string) func(*gomilter.Action, error) {
	return func(act *gomilter.Action, err error) {
		t.Helper()
		act = mustAct(t)(act, err)
		if act.Type != gomilter.ActionContinue && act.Type != gomilter.ActionAccept {
			t.Fatalf("%s: got %v (%d %s), want continue", what, act, act.SMTPCode, act.SMTPReply)
		}
	}
}

// transaction runs connect, helo and MAIL FROM.
func transaction(t *testing.T, s *gomilter.ClientSession, from string) {
	t.Helper()
	wantContinue(t, "connect")(s.Conn("client.example.net", gomilter.FamilyInet, 40000, "192.0.2.10"))
	wantContinue(t, "helo")(s.Helo("client.example.net"))
	wantContinue(t, "mail")(s.Mail(from, ""))
}

// message sends headers and body and returns the end-of-message result.
func message(t *testing.T, s *gomilter.ClientSession, headers [][2]string, body string) ([]gomilter.ModifyAction, *gomilter.Action) {
	t.Helper()
	wantContinue(t, "data")(s.DataStart())
	for _, h := range headers {
		wantContinue(t, "header "+h[0])(s.HeaderField(h[0], h[1], nil))
	}
	wantContinue(t, "eoh")(s.HeaderEnd())
	mods, act, err := s.BodyReadFrom(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return mods, act
}

func TestNegotiationAsksOnlyForWhatChecksNeed(t *testing.T) {
	ts := mustServe(t, testConfig)
	s := ts.session(t, gomilter.NewMacroBag())
	for _, opt := range []gomilter.OptProtocol{gomilter.OptNoData, gomilter.OptNoUnknown, gomilter.OptHeaderLeadingSpace, gomilter.OptNoHeaderReply, gomilter.OptNoConnReply, gomilter.OptNoHeloReply} {
		if !s.ProtocolOption(opt) {
			t.Errorf("protocol option %v not negotiated", opt)
		}
	}
	if s.ProtocolOption(gomilter.OptNoBody) {
		t.Error("the test check reads the body at end of message; the body must be asked for")
	}
	if s.ProtocolOption(gomilter.OptNoMailReply) || s.ProtocolOption(gomilter.OptNoRcptReply) {
		t.Error("MAIL and RCPT must get replies (malformed addresses and recipients are answered there)")
	}

	// With no check at all, no body is asked for.
	bare := mustServe(t, "[policy]\nauthserv_id = \"mx\"\n")
	s2 := bare.session(t, gomilter.NewMacroBag())
	if !s2.ProtocolOption(gomilter.OptNoBody) || !s2.ProtocolOption(gomilter.OptNoEOHReply) {
		t.Error("with no checks the body and end-of-header replies should be skipped")
	}
}

func TestRecipientsAnsweredEachOnTheirOwn(t *testing.T) {
	ts := mustServe(t, testConfig)
	s := ts.session(t, gomilter.NewMacroBag())
	transaction(t, s, "sender@example.org")
	wantContinue(t, "good rcpt")(s.Rcpt("good@example.test", ""))

	act := mustAct(t)(s.Rcpt("bad@example.test", ""))
	if act.Type != gomilter.ActionRejectWithCode || act.SMTPCode != 550 || !strings.HasPrefix(act.SMTPReply, "550 5.7.1 scripted answer (ref=") {
		t.Errorf("bad rcpt: got %d %q", act.SMTPCode, act.SMTPReply)
	}
	act = mustAct(t)(s.Rcpt("later@example.test", ""))
	if act.SMTPCode != 451 || !strings.HasPrefix(act.SMTPReply, "451 4.7.1 scripted answer (ref=") {
		t.Errorf("later rcpt: got %d %q", act.SMTPCode, act.SMTPReply)
	}
	act = mustAct(t)(s.Rcpt("broken@@example.test", ""))
	if act.SMTPCode != 553 || !strings.Contains(act.SMTPReply, "5.1.3") {
		t.Errorf("malformed rcpt: got %d %q", act.SMTPCode, act.SMTPReply)
	}
	mods, end := message(t, s, [][2]string{{"Subject", " hi"}}, "hello\r\n")
	if end.Type != gomilter.ActionAccept {
		t.Fatalf("eom: %v %q", end, end.SMTPReply)
	}
	ref := strings.TrimSuffix(strings.SplitN(act.SMTPReply, "(ref=", 2)[1], ")")
	if !hasHeader(mods, "X-Moat", "ref="+ref) {
		t.Errorf("trace header of the message should carry the ref %s quoted in the rejections; got %v", ref, mods)
	}
	waitLog(t, ts.log, "ref="+ref)
	line := logLine(ts.log.String(), "ref="+ref)
	for _, want := range []string{"bad@example.test:reject(test/test-reject)", "later@example.test:tempfail(test/test-tempfail)", "good@example.test:continue", "action=accept"} {
		if !strings.Contains(line, want) {
			t.Errorf("summary line lacks %q:\n%s", want, line)
		}
	}
}

func hasHeader(mods []gomilter.ModifyAction, name, contains string) bool {
	for _, m := range mods {
		if (m.Type == gomilter.ActionAddHeader || m.Type == gomilter.ActionInsertHeader) && m.HeaderName == name && strings.Contains(m.HeaderValue, contains) {
			return true
		}
	}
	return false
}

func waitLog(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never showed %q:\n%s", want, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func logLine(log, want string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, want) && strings.Contains(l, "msg=message") {
			return l
		}
	}
	return ""
}

func TestMacrosReachTheSession(t *testing.T) {
	ts := mustServe(t, testConfig)
	macros := gomilter.NewMacroBag()
	macros.Set(gomilter.MacroTlsVersion, "TLSv1.3")
	macros.Set(gomilter.MacroCipher, "TLS_AES_256_GCM_SHA384")
	macros.Set(gomilter.MacroAuthAuthen, "alice")
	macros.Set(gomilter.MacroAuthType, "PLAIN")
	macros.Set(gomilter.MacroQueueId, "4XyZQ1")
	s := ts.session(t, macros)
	transaction(t, s, "alice@example.test")
	wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
	mods, end := message(t, s, [][2]string{{"Subject", " macros"}}, "body\r\n")
	if end.Type != gomilter.ActionAccept {
		t.Fatalf("eom: %v", end)
	}
	if !hasHeader(mods, "X-Moat", "tls=TLSv1.3/TLS_AES_256_GCM_SHA384") || !hasHeader(mods, "X-Moat", "auth=alice") {
		t.Errorf("TLS and AUTH macros should be in the trace header: %v", mods)
	}
	if !hasHeader(mods, "Authentication-Results", "auth=pass smtp.auth=alice") {
		t.Errorf("SMTP AUTH should be in Authentication-Results: %v", mods)
	}
	waitLog(t, ts.log, "queue_id=4XyZQ1")
	if line := logLine(ts.log.String(), "queue_id=4XyZQ1"); !strings.Contains(line, "client=client.example.net[192.0.2.10]") || !strings.Contains(line, "auth=alice") {
		t.Errorf("summary line lacks client or auth: %s", line)
	}
}

func TestSeveralMessagesAndAbortOnOneConnection(t *testing.T) {
	ts := mustServe(t, testConfig)
	s := ts.session(t, gomilter.NewMacroBag())
	transaction(t, s, "first@example.org")
	wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
	if err := s.Abort(nil); err != nil {
		t.Fatal(err)
	}
	refs := map[string]bool{}
	for i := 0; i < 3; i++ {
		wantContinue(t, "mail")(s.Mail("next@example.org", ""))
		wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
		mods, end := message(t, s, [][2]string{{"Subject", " again"}}, "body\r\n")
		if end.Type != gomilter.ActionAccept {
			t.Fatalf("message %d: %v", i, end)
		}
		for _, m := range mods {
			if m.HeaderName == "X-Moat" {
				refs[strings.Fields(m.HeaderValue)[0]] = true
			}
		}
		if !hasHeader(mods, "X-Test-Check", "seen") {
			t.Errorf("message %d lacks the check's header", i)
		}
	}
	if len(refs) != 3 {
		t.Errorf("each message needs its own reference id, got %v", refs)
	}
	waitLog(t, ts.log, "from=first@example.org")
	if line := logLine(ts.log.String(), "from=first@example.org"); !strings.Contains(line, "no-data") {
		t.Errorf("the aborted message should be summarised as ended without data: %s", line)
	}
}

func TestPanickingCheckTempfailsTheMessageOnly(t *testing.T) {
	ts := mustServe(t, testConfig)
	s := ts.session(t, gomilter.NewMacroBag())
	transaction(t, s, "sender@example.org")
	act := mustAct(t)(s.Rcpt("boom@example.test", ""))
	if act.SMTPCode != 451 || !strings.Contains(act.SMTPReply, "4.3.0") || !strings.Contains(act.SMTPReply, "ref=") {
		t.Errorf("panicking check: got %d %q, want 451 4.3.0 with a ref", act.SMTPCode, act.SMTPReply)
	}
	wantContinue(t, "rcpt after panic")(s.Rcpt("good@example.test", ""))
	_, end := message(t, s, nil, "PANIC-ME\r\n")
	if end.SMTPCode != 451 {
		t.Errorf("panic at end of message: got %v %q, want 451", end, end.SMTPReply)
	}
	waitLog(t, ts.log, "check panicked")
	// The daemon lives on: a new connection works.
	s2 := ts.session(t, gomilter.NewMacroBag())
	transaction(t, s2, "sender@example.org")
	wantContinue(t, "rcpt")(s2.Rcpt("good@example.test", ""))
}

func TestEndOfMessageRejectAndForgedHeadersRemoved(t *testing.T) {
	ts := mustServe(t, testConfig)
	s := ts.session(t, gomilter.NewMacroBag())
	transaction(t, s, "sender@example.org")
	wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
	_, end := message(t, s, nil, "please REJECT-ME now\r\n")
	if end.SMTPCode != 550 || !strings.HasPrefix(end.SMTPReply, "550 5.7.1 scripted answer (ref=") {
		t.Errorf("body rejection: got %d %q", end.SMTPCode, end.SMTPReply)
	}

	wantContinue(t, "mail")(s.Mail("sender@example.org", ""))
	wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
	mods, end := message(t, s, [][2]string{
		{"Authentication-Results", " other.example; spf=pass"},
		{"Authentication-Results", " mx.example.test; dkim=pass header.d=bank.example"},
		{"X-Spam-Flag", " NO"},
		{"Subject", " forged"},
	}, "body\r\n")
	if end.Type != gomilter.ActionAccept {
		t.Fatalf("eom: %v", end)
	}
	var removed []string
	for _, m := range mods {
		if m.Type == gomilter.ActionChangeHeader && m.HeaderValue == "" {
			removed = append(removed, m.HeaderName+"#"+string(rune('0'+m.HeaderIndex)))
		}
	}
	got := strings.Join(removed, ",")
	if !strings.Contains(got, "Authentication-Results#2") || strings.Contains(got, "Authentication-Results#1") || !strings.Contains(got, "X-Spam-Flag#1") {
		t.Errorf("want the A-R claiming our authserv-id (2nd) and X-Spam-Flag removed, the other A-R kept; removed %s", got)
	}
	if !hasHeader(mods, "Authentication-Results", "mx.example.test") {
		t.Error("our own Authentication-Results is missing")
	}
}

func TestMalformedPacketClosesOnlyThatConnection(t *testing.T) {
	ts := mustServe(t, testConfig)
	for _, pkt := range [][]byte{
		{0, 0, 0, 0},           // zero length: crashed the library before
		{0, 0, 0, 2, 'C', 'x'}, // connect without NUL and family
		{0, 0, 0, 2, 'M', 'a'}, // MAIL without NUL
	} {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			t.Fatal(err)
		}
		// A valid negotiation first, then the bad packet.
		neg := make([]byte, 4+1+12)
		binary.BigEndian.PutUint32(neg, 13)
		neg[4] = 'O'
		binary.BigEndian.PutUint32(neg[5:], 6)
		binary.BigEndian.PutUint32(neg[9:], 0x1ff)
		binary.BigEndian.PutUint32(neg[13:], 0x1fffff)
		_, _ = c.Write(neg)
		buf := make([]byte, 512)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Read(buf)
		_, _ = c.Write(pkt)
		_, _ = c.Read(buf) // the server closes
		c.Close()
	}
	waitLog(t, ts.log, "malformed packet")
	s := ts.session(t, gomilter.NewMacroBag())
	transaction(t, s, "sender@example.org")
	wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
}

func TestSwapUsesNewEngineForNewConnections(t *testing.T) {
	ts := mustServe(t, testConfig)
	f, err := config.Parse("new.toml", []byte(strings.Replace(testConfig, `reject_to = ["bad@example.test"]`, `reject_to = ["good@example.test"]`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.Build(f, nil, policytest.Services())
	if err != nil {
		t.Fatal(err)
	}
	old := ts.session(t, gomilter.NewMacroBag())
	transaction(t, old, "sender@example.org")
	ts.srv.Swap(eng)
	// The session in flight keeps its engine.
	wantContinue(t, "old session rcpt")(old.Rcpt("good@example.test", ""))
	s := ts.session(t, gomilter.NewMacroBag())
	transaction(t, s, "sender@example.org")
	if act := mustAct(t)(s.Rcpt("good@example.test", "")); act.SMTPCode != 550 {
		t.Errorf("new session should use the new configuration, got %v", act)
	}
}

// TestBodySkippedPastEveryScannersLimit: when the only body reader is a scanner that skips messages above its
// size limit, moat answers SMFIR_SKIP once the message passes it, and the message is still judged.
func TestBodySkippedPastEveryScannersLimit(t *testing.T) {
	ts := mustServe(t, "[policy]\nauthserv_id = \"mx.example.test\"\n[checks.test]\nscan_max_size = 1000\nreject_body = \"NEVER\"\n")
	s := ts.session(t, gomilter.NewMacroBag())
	if s.ProtocolOption(gomilter.OptNoBody) || s.ProtocolOption(gomilter.OptNoBodyReply) {
		t.Fatal("body chunks must be sent and answered for moat to skip them")
	}
	transaction(t, s, "sender@example.org")
	wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
	wantContinue(t, "data")(s.DataStart())
	wantContinue(t, "eoh")(s.HeaderEnd())
	chunk := []byte(strings.Repeat("x", 800) + "\r\n")
	act := mustAct(t)(s.BodyChunk(chunk))
	if act.Type != gomilter.ActionContinue {
		t.Fatalf("first chunk (under the limit): %v", act)
	}
	mustAct(t)(s.BodyChunk(chunk))
	if !s.Skip() {
		t.Fatal("second chunk (past the limit): moat did not answer skip")
	}
	mods, end, err := s.End()
	if err != nil || end.Type != gomilter.ActionAccept {
		t.Fatalf("eom: %v %v", end, err)
	}
	if !hasHeader(mods, "X-Test-Scan", "too large") {
		t.Errorf("the scanner should have skipped the message as too large: %v", mods)
	}
}

// progressCounter dials the server and counts the SMFIR_PROGRESS packets the server sends, which the
// go-milter client reads and drops.
type progressCounter struct {
	mu       sync.Mutex
	progress int
}

type countingConn struct {
	net.Conn
	pc   *progressCounter
	need int    // bytes left of the current packet's payload
	hdr  []byte // partial length prefix
	code bool   // the next byte is a packet code
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for _, b := range p[:n] {
		switch {
		case c.code:
			c.code = false
			if b == 'p' {
				c.pc.mu.Lock()
				c.pc.progress++
				c.pc.mu.Unlock()
			}
			c.need--
		case c.need > 0:
			c.need--
		default:
			c.hdr = append(c.hdr, b)
			if len(c.hdr) == 4 {
				c.need = int(binary.BigEndian.Uint32(c.hdr))
				c.hdr = c.hdr[:0]
				c.code = c.need > 0
			}
		}
	}
	return n, err
}

func (pc *progressCounter) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, pc: pc}, nil
}

func TestProgressSentDuringSlowEndOfMessage(t *testing.T) {
	// The server's progress interval is 50 ms; the check takes 400 ms.
	ts := mustServe(t, "[policy]\nauthserv_id = \"mx.example.test\"\n[checks.test]\ndelay = \"400ms\"\n")
	pc := &progressCounter{}
	c := gomilter.NewClient("unix", ts.path, gomilter.WithDialer(pc))
	s, err := c.Session(gomilter.NewMacroBag())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	transaction(t, s, "sender@example.org")
	wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
	_, end := message(t, s, nil, "slow\r\n")
	if end.Type != gomilter.ActionAccept {
		t.Fatalf("eom: %v", end)
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.progress < 2 {
		t.Errorf("got %d SMFIR_PROGRESS packets during a 400 ms end of message with a 50 ms interval, want several", pc.progress)
	}
}

func TestSpoolFileRemovedOnAbortAndAfterMessage(t *testing.T) {
	dir := t.TempDir()
	toml := "[milter]\nspool_dir = \"" + dir + "\"\nspool_memory = 0\n[policy]\nauthserv_id = \"mx.example.test\"\n[checks.test]\nreject_body = \"NEVER\"\n"
	ts := mustServe(t, toml)
	spoolFiles := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "moat-spool-*"))
		return len(m)
	}
	s := ts.session(t, gomilter.NewMacroBag())
	transaction(t, s, "sender@example.org")
	wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
	wantContinue(t, "data")(s.DataStart())
	wantContinue(t, "eoh")(s.HeaderEnd())
	wantContinue(t, "body")(s.BodyChunk([]byte("some body\r\n")))
	waitFor := func(want int, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for spoolFiles() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d spool files, want %d", what, spoolFiles(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(1, "while the body arrives")
	if err := s.Abort(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(0, "after abort")
	wantContinue(t, "mail")(s.Mail("sender@example.org", ""))
	wantContinue(t, "rcpt")(s.Rcpt("good@example.test", ""))
	if _, end := message(t, s, nil, "another body\r\n"); end.Type != gomilter.ActionAccept {
		t.Fatalf("eom: %v", end)
	}
	waitFor(0, "after the message")
}

func TestListenRefusesASocketInUse(t *testing.T) {
	ts := mustServe(t, testConfig)
	cfg := DefaultConfig()
	cfg.Listen = []string{"unix:" + ts.path}
	if lns, err := Listen(cfg, slog.Default()); err == nil {
		for _, l := range lns {
			l.Close()
		}
		t.Fatal("a second moat took over a socket another one serves on")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error: %v", err)
	}
	// The first server still answers.
	s := ts.session(t, gomilter.NewMacroBag())
	transaction(t, s, "sender@example.org")
}
