// Package ops holds the end-to-end tests of running moat in production: the metrics endpoint scraped after
// real traffic through Postfix, the health endpoint against a real store, and systemd's notification
// protocol spoken by the real binary.
//
//	smtp client (test) -> Postfix -> moat (test check, dnsbl over unbound, clamd) -> Maildir
//	                                  `-> /metrics, /healthz (scraped by the test)
package ops

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/moatmail/moat/test/stack"
)

const token = "scrape-token"

// eicar is the antivirus test file, split so that no scanner flags this source.
var eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

type env struct {
	dir, conf, sock, metrics string
	moat                     *stack.Moat
	pf                       *stack.Postfix
	clamd                    *stack.Clamd
}

func (e *env) writeConfig(t *testing.T, extra string) {
	t.Helper()
	conf := fmt.Sprintf(`
[milter]
listen = ["unix:%s"]
socket_mode = "0666"

[policy]
authserv_id = "mx.moat.test"

[metrics]
listen = "%s"
bearer_token = "%s"

[dns]
servers = ["%s"]

[checks.dnsbl]
threshold = 3

[[checks.dnsbl.lists]]
zone = "list.moat.test"
weight = 1

[[checks.dnsbl.lists]]
zone = "nx.moat.test"
weight = 1

[checks.test]
reject_to = ["bad@example.test"]
text = "refused by the test check"

[checks.clamd]
servers = ["unix:%s"]
%s`, e.sock, e.metrics, token, dnsAddr, e.clamd.Socket, extra)
	if err := os.WriteFile(e.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

var dnsAddr string

func start(t *testing.T) *env {
	t.Helper()
	stack.Need(t, "postfix", "clamd", "unbound")
	dns := stack.StartDNS(t, []string{"1.0.0.127.list.moat.test. 300 IN A 127.0.0.2"})
	dnsAddr = dns.Addr
	e := &env{dir: stack.TempDir(t, "moat")}
	e.conf = filepath.Join(e.dir, "moat.toml")
	e.sock = filepath.Join(e.dir, "moat.sock")
	e.metrics = fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t))
	e.clamd = stack.StartClamd(t, stack.ClamdOptions{})
	e.writeConfig(t, "")
	e.moat = stack.StartMoat(t, e.conf, "unix:"+e.sock, "tcp:"+e.metrics)
	e.pf = stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + e.sock,
		Mailboxes: []string{"a@example.test", "b@example.test", "bad@example.test"}})
	return e
}

// series is one scrape: the value of every sample, keyed by its name and labels as exposed.
type series map[string]float64

func scrape(t *testing.T, addr, path, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

func scrapeMetrics(t *testing.T, addr string) series {
	t.Helper()
	code, body := scrape(t, addr, "/metrics", token)
	if code != 200 {
		t.Fatalf("/metrics: status %d: %s", code, body)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	out := series{}
	for _, line := range strings.Split(body, "\n") {
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("bad sample %q: %v", line, err)
		}
		out[m[1]] = v
	}
	return out
}

func (s series) delta(before series, key string) float64 { return s[key] - before[key] }

func TestMetricsAfterPostfixTraffic(t *testing.T) {
	e := start(t)
	if code, _ := scrape(t, e.metrics, "/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("scrape without the token: status %d, want 401", code)
	}
	if code, _ := scrape(t, e.metrics, "/metrics", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("scrape with a wrong token: status %d, want 401", code)
	}
	before := scrapeMetrics(t, e.metrics)

	send := func(to string, body string) stack.SMTPResult {
		return stack.SendMail(t, e.pf.Addr, "client.example.org", "sender@example.org", []string{to},
			stack.Message("sender@example.org", to, "metrics", body))
	}
	for _, to := range []string{"a@example.test", "b@example.test"} {
		if r := send(to, "hello\n"); !r.OK() {
			t.Fatalf("message to %s: %s", to, r)
		}
	}
	if r := send("bad@example.test", "hello\n"); r.OK() || r.Code != 550 {
		t.Fatalf("message to bad@: %s, want 550 at RCPT", r)
	}
	if r := send("a@example.test", eicar+"\n"); r.OK() || r.Code != 554 {
		t.Fatalf("EICAR: %s, want 554", r)
	}
	e.pf.WaitMessages(t, "b@example.test", 1, 30*time.Second)

	// The summary of the refused-at-RCPT message is written when Postfix ends the milter session: wait for it.
	var after series
	deadline := time.Now().Add(20 * time.Second)
	for {
		after = scrapeMetrics(t, e.metrics)
		if after.delta(before, `moat_messages_total{action="reject",reason="test/test-reject"}`) >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	clamdServer := "unix:" + e.clamd.Socket
	exact := map[string]float64{
		`moat_messages_total{action="accept",reason="none"}`:               2,
		`moat_messages_total{action="reject",reason="test/test-reject"}`:   1,
		`moat_messages_total{action="reject",reason="clamd/virus"}`:        1,
		`moat_recipients_total{action="accept"}`:                           2,
		`moat_recipients_total{action="reject"}`:                           2,
		`moat_check_results_total{check="clamd",result="clean"}`:           2,
		`moat_check_results_total{check="clamd",result="found"}`:           1,
		`moat_check_duration_seconds_count{check="clamd",stage="eom"}`:     3,
		`moat_check_results_total{check="test",result="fail"}`:             1,
		`moat_dnsbl_listed_total{zone="list.moat.test"}`:                   4, // one lookup per SMTP session
		`moat_check_duration_seconds_count{check="dnsbl",stage="connect"}`: 4,
		`moat_panics_total`:                                             0,
		`moat_milter_protocol_errors_total`:                             0,
		`moat_scanner_errors_total{kind="unavailable",scanner="clamd"}`: 0,
	}
	for key, want := range exact {
		if d := after.delta(before, key); d != want {
			t.Errorf("%s moved by %v, want %v", key, d, want)
		}
	}
	// Both zones were asked once, at the first SMTP connection (the harness's readiness probe of Postfix): NOERROR for the
	// listing, NXDOMAIN for the other; the sessions of the test are answered by the cache, two zones each.
	for _, rcode := range []string{"NOERROR", "NXDOMAIN"} {
		if v := after[`moat_dns_queries_total{rcode="`+rcode+`"}`]; v < 1 {
			t.Errorf("%s queries = %v, want at least 1", rcode, v)
		}
	}
	if d := after.delta(before, `moat_dns_cache_hits_total`); d < 8 {
		t.Errorf("cache hits moved by %v, want at least 8 (4 sessions, 2 zones)", d)
	}
	if v := after[fmt.Sprintf(`moat_scanner_up{scanner="clamd",server=%q}`, clamdServer)]; v != 1 {
		t.Errorf("moat_scanner_up for %s = %v, want 1", clamdServer, v)
	}
	if _, ok := after[`moat_sessions_active`]; !ok {
		t.Error("moat_sessions_active is missing")
	}
	buildInfo := false
	for k, v := range after {
		if strings.HasPrefix(k, "moat_build_info{") && strings.Contains(k, `goversion="go`) && v == 1 {
			buildInfo = true
		}
	}
	if !buildInfo {
		t.Error("moat_build_info with a goversion label is missing")
	}
	for k := range after {
		for _, leak := range []string{"example.test", "example.org", "sender@"} {
			if strings.Contains(k, leak) {
				t.Errorf("a label carries a mail address or domain: %s", k)
			}
		}
	}
	if code, body := scrape(t, e.metrics, "/healthz", token); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 ok", code, body)
	}

	// Reloads: a valid file counts a success, a broken one a failure (and the running configuration stays).
	before = after
	if err := e.moat.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, e.moat, "configuration reloaded", 1)
	if err := os.WriteFile(e.conf, []byte("[checks.nosuchcheck]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.moat.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, e.moat, "reload failed", 1)
	after = scrapeMetrics(t, e.metrics)
	if d := after.delta(before, `moat_config_reloads_total{result="success"}`); d != 1 {
		t.Errorf("successful reloads moved by %v, want 1", d)
	}
	if d := after.delta(before, `moat_config_reloads_total{result="failure"}`); d != 1 {
		t.Errorf("failed reloads moved by %v, want 1", d)
	}

	// clamd gone: the next message is tempfailed, the server is marked down and the attempt counted.
	e.clamd.Stop()
	before = after
	if r := send("a@example.test", "hello again\n"); r.OK() || r.Code != 451 {
		t.Fatalf("message with clamd down: %s, want 451", r)
	}
	after = scrapeMetrics(t, e.metrics)
	if v := after[fmt.Sprintf(`moat_scanner_up{scanner="clamd",server=%q}`, clamdServer)]; v != 0 {
		t.Errorf("moat_scanner_up with clamd stopped = %v, want 0", v)
	}
	if d := after.delta(before, `moat_scanner_errors_total{kind="unavailable",scanner="clamd"}`); d != 1 {
		t.Errorf("clamd unavailable errors moved by %v, want 1", d)
	}
	if d := after.delta(before, `moat_messages_total{action="tempfail",reason="clamd/scan-failed"}`); d != 1 {
		t.Errorf("tempfailed messages moved by %v, want 1", d)
	}
}

func waitLog(t *testing.T, m *stack.Moat, text string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(m.Log(), text) < n {
		if time.Now().After(deadline) {
			t.Fatalf("moat did not log %q %d times; log:\n%s", text, n, m.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHealthzFollowsTheStore: with greylisting on a Redis store, /healthz answers 503 with the reason while
// Redis is down and 200 again once it is back.
func TestHealthzFollowsTheStore(t *testing.T) {
	stack.Need(t, "redis-server")
	redis := stack.StartRedis(t)
	dir := stack.TempDir(t, "moat")
	sock := filepath.Join(dir, "moat.sock")
	addr := fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t))
	conf := filepath.Join(dir, "moat.toml")
	text := fmt.Sprintf(`
[milter]
listen = ["unix:%s"]

[metrics]
listen = "%s"

[store]
backend = "redis"
redis_addr = "%s"
redis_timeout = "500ms"

[checks.greylist]
`, sock, addr, redis.Addr)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	m := stack.StartMoat(t, conf, "unix:"+sock, "tcp:"+addr)
	if code, body := scrape(t, addr, "/healthz", ""); code != 200 {
		t.Fatalf("/healthz with Redis up: %d %q, want 200", code, body)
	}
	redis.Pause()
	code, body := scrape(t, addr, "/healthz", "")
	redis.Resume()
	if code != 503 || !strings.Contains(body, "store") || !strings.Contains(body, "redis") {
		t.Errorf("/healthz with Redis paused: %d %q, want 503 naming the redis store", code, body)
	}
	if code, body := scrape(t, addr, "/healthz", ""); code != 200 {
		t.Errorf("/healthz after Redis resumed: %d %q, want 200", code, body)
	}
	if m.Exited() {
		t.Error("moat exited")
	}
}

// TestSystemdNotify runs moat as systemd would for Type=notify: READY=1 once the sockets are bound,
// RELOADING=1 (with MONOTONIC_USEC) then READY=1 around SIGHUP, STOPPING=1 at SIGTERM.
func TestSystemdNotify(t *testing.T) {
	dir := stack.TempDir(t, "moat")
	sock := filepath.Join(dir, "moat.sock")
	conf := filepath.Join(dir, "moat.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("[milter]\nlisten = [\"unix:%s\"]\n", sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	npath := filepath.Join(dir, "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: npath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	t.Setenv("NOTIFY_SOCKET", npath)
	m := stack.StartMoat(t, conf)
	next := func() string {
		t.Helper()
		_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		n, err := nc.Read(buf)
		if err != nil {
			t.Fatalf("no notification from moat: %v; log:\n%s", err, m.Log())
		}
		return string(buf[:n])
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	if c, err := net.Dial("unix", sock); err != nil {
		t.Errorf("READY=1 came before the milter socket accepts: %v", err)
	} else {
		c.Close()
	}
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if got := next(); !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[0-9]+$`).MatchString(got) {
		t.Errorf("at SIGHUP: %q, want RELOADING=1 and MONOTONIC_USEC", got)
	}
	if got := next(); got != "READY=1" {
		t.Errorf("after the reload: %q, want READY=1", got)
	}
	if err := m.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "STOPPING=1" {
		t.Errorf("at SIGTERM: %q, want STOPPING=1", got)
	}
	if err := m.Wait(t, 30*time.Second); err != nil {
		t.Errorf("moat did not stop cleanly: %v", err)
	}
}
