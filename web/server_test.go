package web

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/quarantine"
)

const testSecret = "0123456789abcdef0123456789abcdef-test-secret"

// clock is a settable time for the sessions, the limiter and the links.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	srv   *Server
	fake  *fakeQuarantine
	clock *clock
	http  *httptest.Server
}

// mustConfig loads a [web] table from text, with a password file holding admin/secret-pw and a digest key.
func mustConfig(t *testing.T, extra string) Config {
	t.Helper()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("secret-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte("admin:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "digest.key"), []byte(testSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	text := "[web]\npasswords = \"passwd\"\nlogin_attempts = 3\n" + extra
	f, err := config.Parse(filepath.Join(dir, "moat.toml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const digestTable = "[web.digest]\nsecret_file = \"digest.key\"\nbase_url = \"http://127.0.0.1:9358\"\nfrom = \"postmaster@example.org\"\nsmtp = \"127.0.0.1:10025\"\n"

func newEnv(t *testing.T, extra string) *env {
	t.Helper()
	cfg := mustConfig(t, extra)
	fake := newFake()
	s, err := New(cfg, fake, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)}
	s.now = c.now
	e := &env{srv: s, fake: fake, clock: c, http: httptest.NewServer(s)}
	t.Cleanup(e.http.Close)
	return e
}

// client is a browser stand-in: a cookie jar, redirects not followed.
type client struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (e *env) client(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: e.http.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (c *client) do(req *http.Request) (*http.Response, string) {
	c.t.Helper()
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (c *client) get(path string) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.base+path, nil)
	return c.do(req)
}

func (c *client) post(path string, form url.Values) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in page:\n%s", body)
	}
	return m[1]
}

// login logs c in and returns the session's CSRF token.
func (c *client) login(user, pass string) (*http.Response, string) {
	c.t.Helper()
	_, body := c.get("/login")
	return c.post("/login", url.Values{"csrf": {csrfOf(c.t, body)}, "user": {user}, "password": {pass}})
}

func (c *client) mustLogin() string {
	c.t.Helper()
	resp, body := c.login("admin", "secret-pw")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		c.t.Fatalf("login: %s %q\n%s", resp.Status, resp.Header.Get("Location"), body)
	}
	_, body = c.get("/")
	return csrfOf(c.t, body)
}

func heldRecord(id, sender, subject string, rcpts ...string) quarantine.Record {
	r := quarantine.Record{ID: id, Sender: sender, Subject: subject, Kind: quarantine.KindSpam, Score: 12.5,
		Time: time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC), Reasons: []string{"policy/quarantine_score"},
		Checks: []quarantine.CheckResult{{Check: "spamd", Stage: "eom", Verdict: "spam", Reason: "BAYES_99", Score: 12.5}}}
	for _, a := range rcpts {
		r.Recipients = append(r.Recipients, quarantine.Recipient{Addr: a, State: quarantine.StateHeld})
	}
	return r
}

const plainMessage = "From: Spammer <spam@bad.example>\r\nSubject: buy now\r\n\r\nCheap pills.\r\n"

func TestLoginListAndRelease(t *testing.T) {
	e := newEnv(t, "")
	e.fake.add(heldRecord("REF1", "spam@bad.example", "buy now", "alice@example.org"), plainMessage)
	c := e.client(t)
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("without a session: %s to %q, want a redirect to /login", resp.Status, resp.Header.Get("Location"))
	}
	token := c.mustLogin()
	_, body := c.get("/?kind=spam&sender=bad")
	if !strings.Contains(body, "buy now") || !strings.Contains(body, `href="/msg/REF1"`) {
		t.Fatalf("list lacks the held message:\n%s", body)
	}
	q := e.fake.queries[len(e.fake.queries)-1]
	if q.Kind != quarantine.KindSpam || q.Sender != "bad" || q.RcptExact != "" {
		t.Errorf("query = %+v, want kind spam, sender bad, no RcptExact for an administrator", q)
	}
	resp, body := c.get("/msg/REF1")
	if resp.StatusCode != 200 || !strings.Contains(body, "Cheap pills.") || !strings.Contains(body, "BAYES_99") {
		t.Fatalf("message page %s:\n%s", resp.Status, body)
	}
	resp, body = c.post("/msg/REF1/act", url.Values{"csrf": {token}, "action": {"release"}})
	if resp.StatusCode != 200 || !strings.Contains(body, "250 2.0.0 Ok") {
		t.Fatalf("release: %s\n%s", resp.Status, body)
	}
	if got := e.fake.called(); len(got) != 1 || got[0] != "release REF1 admin " {
		t.Errorf("quarantine calls = %q, want one release by admin for every recipient", got)
	}
}

func TestEveryActionCallsTheQuarantine(t *testing.T) {
	e := newEnv(t, "")
	e.fake.add(heldRecord("R", "s@x.example", "s", "a@example.org"), plainMessage)
	c := e.client(t)
	token := c.mustLogin()
	want := map[string]string{"release": "release", "release-whitelist": "ham+whitelist", "ham": "ham", "spam": "spam", "delete": "delete"}
	for action, call := range want {
		e.fake.calls = nil
		resp, body := c.post("/msg/R/act", url.Values{"csrf": {token}, "action": {action}})
		if resp.StatusCode != 200 {
			t.Errorf("%s: %s\n%s", action, resp.Status, body)
		}
		if got := e.fake.called(); len(got) != 1 || !strings.HasPrefix(got[0], call+" R admin") {
			t.Errorf("%s: calls %q, want %s", action, got, call)
		}
	}
}

func TestCSRFRefused(t *testing.T) {
	e := newEnv(t, "")
	e.fake.add(heldRecord("R", "s@x.example", "s", "a@example.org"), plainMessage)
	c := e.client(t)
	token := c.mustLogin()
	for name, form := range map[string]url.Values{
		"no token":    {"action": {"release"}},
		"wrong token": {"action": {"release"}, "csrf": {token[:len(token)-2] + "xx"}},
	} {
		resp, body := c.post("/msg/R/act", form)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
			t.Errorf("%s: %s, want 403 naming CSRF\n%s", name, resp.Status, body)
		}
		resp, _ = c.post("/bulk", url.Values{"action": {"delete"}, "id": {"R"}})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: bulk answered %s, want 403", name, resp.Status)
		}
	}
	if got := e.fake.called(); len(got) != 0 {
		t.Fatalf("forms without the token acted: %q", got)
	}
	// The login form has its own token: a POST from elsewhere cannot log a victim in.
	other := e.client(t)
	resp, _ := other.post("/login", url.Values{"user": {"admin"}, "password": {"secret-pw"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("login without its token: %s, want 403", resp.Status)
	}
	// GET never acts.
	if resp, _ := c.get("/msg/R/act?action=delete"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET of the action URL: %s, want 405", resp.Status)
	}
}

func TestLoginRateLimit(t *testing.T) {
	e := newEnv(t, "") // login_attempts = 3
	c := e.client(t)
	for i := 0; i < 3; i++ {
		if resp, _ := c.login("admin", "wrong"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %s, want 401", i+1, resp.Status)
		}
	}
	resp, body := c.login("admin", "secret-pw")
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "Too many failed logins") {
		t.Fatalf("after 3 failures the right password got %s, want 429", resp.Status)
	}
	// The user name is limited too: another client address changes nothing. The limiter keys the same
	// user, so a fresh limiter per address is simulated by resetting the address key.
	e.srv.byAddr.reset("127.0.0.1")
	if resp, _ := c.login("admin", "secret-pw"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("same user from a fresh address: %s, want 429", resp.Status)
	}
	e.clock.add(16 * time.Minute) // past login_window
	if resp, _ := c.login("admin", "secret-pw"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the window: %s, want a login", resp.Status)
	}
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t, "session_ttl = \"1h\"\n")
	c := e.client(t)
	token := c.mustLogin()
	e.clock.add(59 * time.Minute)
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("within the TTL: %s", resp.Status)
	}
	e.clock.add(2 * time.Minute)
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the TTL: %s, want a redirect to the login page", resp.Status)
	}
	if resp, _ := c.post("/msg/R/act", url.Values{"csrf": {token}, "action": {"release"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST with an ended session: %s, want 403", resp.Status)
	}
}

func TestCookieAndHeaders(t *testing.T) {
	e := newEnv(t, "")
	c := e.client(t)
	resp, _ := c.login("admin", "secret-pw")
	var sess *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == cookieName {
			sess = ck
		}
	}
	if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Secure || len(sess.Value) < 43 {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, not Secure without TLS, 32 random bytes", sess)
	}
	for _, path := range []string{"/login", "/", "/msg/nope", "/static/style.css"} {
		resp, _ := c.get(path)
		h := resp.Header
		if !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
			!strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") ||
			h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v lack the security headers", path, h)
		}
	}
	// Under TLS the cookie is Secure.
	e.srv.cfg.cert = &tls.Certificate{}
	rec := httptest.NewRecorder()
	e.srv.setCookie(rec, cookieName, "x", time.Hour)
	if !strings.Contains(rec.Header().Get("Set-Cookie"), "Secure") {
		t.Errorf("under TLS: Set-Cookie %q lacks Secure", rec.Header().Get("Set-Cookie"))
	}
}

const htmlMessage = "From: x@bad.example\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=BB\r\n\r\n" +
	"--BB\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 <script>alert(1)</script>\r\n" +
	"--BB\r\nContent-Type: text/html\r\n\r\n<p onclick=\"alert(2)\">hi<script>alert(3)</script><img src=\"http://127.0.0.1:1/x.png\"><a href=\"http://evil.example/\">link</a></p>\r\n" +
	"--BB\r\nContent-Type: application/pdf; name=\"bill.pdf\"\r\nContent-Disposition: attachment; filename=\"bill.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n" +
	"--BB--\r\n"

func TestMessagePageSanitises(t *testing.T) {
	e := newEnv(t, "")
	e.fake.add(heldRecord("H", "x@bad.example", "<script>alert(0)</script>", "a@example.org"), htmlMessage)
	c := e.client(t)
	c.mustLogin()
	resp, body := c.get("/msg/H")
	if resp.StatusCode != 200 {
		t.Fatalf("%s\n%s", resp.Status, body)
	}
	for _, want := range []string{"café &lt;script&gt;", "&lt;script&gt;alert(0)", `<iframe sandbox="" src="/msg/H/part/0"`, "bill.pdf", "application/pdf", "9 B"} {
		if !strings.Contains(body, want) {
			t.Errorf("message page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Errorf("message page carries a raw <script>:\n%s", body)
	}
	resp, part := c.get("/msg/H/part/0")
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "sandbox") || !strings.Contains(csp, "img-src data:") || strings.Contains(csp, "script-src") {
		t.Errorf("part CSP %q: want sandbox, img-src data: and no script source", csp)
	}
	for _, bad := range []string{"<script", "onclick", "http://127.0.0.1:1"} {
		if strings.Contains(part, bad) {
			t.Errorf("sanitised part still has %q:\n%s", bad, part)
		}
	}
	if !strings.Contains(part, "hi") || !strings.Contains(part, `href="http://evil.example/"`) {
		t.Errorf("sanitising lost the content:\n%s", part)
	}
}

func TestBrokenMIMEShowsAnError(t *testing.T) {
	e := newEnv(t, "")
	broken := "Subject: broken\r\nContent-Type: multipart/mixed; boundary=\"X\"\r\n\r\n--X\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n--X\r\nContent-Type: text/html; charset=\"\r\n\r\n<p>x" // no closing boundary, bad parameter
	e.fake.add(heldRecord("B", "x@bad.example", "broken", "a@example.org"), broken)
	e.fake.add(heldRecord("B2", "x@bad.example", "nobound", "a@example.org"), "Content-Type: multipart/mixed\r\n\r\nbody\r\n")
	c := e.client(t)
	c.mustLogin()
	resp, body := c.get("/msg/B")
	if resp.StatusCode != 200 || !strings.Contains(body, "first part") || !strings.Contains(body, `class="error"`) {
		t.Fatalf("broken MIME: %s; want 200 with the readable part and an error line\n%s", resp.Status, body)
	}
	resp, body = c.get("/msg/B2")
	if resp.StatusCode != 200 || !strings.Contains(body, "multipart without a boundary") {
		t.Fatalf("multipart without boundary: %s\n%s", resp.Status, body)
	}
}

func TestBulkActions(t *testing.T) {
	e := newEnv(t, "")
	e.fake.add(heldRecord("A1", "s@x.example", "one", "a@example.org"), plainMessage)
	e.fake.add(heldRecord("A2", "s@x.example", "two", "a@example.org"), plainMessage)
	c := e.client(t)
	token := c.mustLogin()
	resp, body := c.post("/bulk", url.Values{"csrf": {token}, "action": {"spam"}, "id": {"A1", "A2", "GONE"}})
	if resp.StatusCode != http.StatusMultiStatus || !strings.Contains(body, "GONE: no such message") {
		t.Fatalf("bulk with one missing id: %s\n%s", resp.Status, body)
	}
	if got := e.fake.called(); len(got) != 2 {
		t.Fatalf("calls %q, want spam for A1 and A2", got)
	}
}

func TestPaging(t *testing.T) {
	e := newEnv(t, "page_size = 2\n")
	for _, id := range []string{"P1", "P2", "P3"} {
		e.fake.add(heldRecord(id, "s@x.example", id, "a@example.org"), plainMessage)
	}
	c := e.client(t)
	c.mustLogin()
	_, body := c.get("/?sort=score&desc=1")
	if !strings.Contains(body, "1–2 of 3") || !strings.Contains(body, `rel="next"`) || strings.Contains(body, `rel="prev"`) {
		t.Fatalf("first page:\n%s", body)
	}
	_, body = c.get("/?page=2&sort=score&desc=1")
	q := e.fake.queries[len(e.fake.queries)-1]
	if q.Offset != 2 || q.Limit != 2 || q.Sort != "score" || !q.Desc || !strings.Contains(body, "3–3 of 3") {
		t.Fatalf("page 2: query %+v\n%s", q, body)
	}
	_, body = c.get("/?sort=nonsense&since=yesterday")
	if !strings.Contains(body, "unknown sort") || !strings.Contains(body, "since: want a date") {
		t.Fatalf("bad filter not reported:\n%s", body)
	}
}
