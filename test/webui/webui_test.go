// Package webui tests the review page in a real browser: Debian's chromium driven by chromedp, headless,
// against the web package over a real quarantine (SQLite store). With CI=true a missing chromium fails.
package webui

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/quarantine"
	"github.com/moatmail/moat/web"
)

type source []byte

func (s source) Open() io.Reader { return bytes.NewReader(s) }
func (s source) Size() int64     { return int64(len(s)) }

func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt-get install chromium); CI=true requires it")
	}
	t.Skip("chromium is not installed")
	return ""
}

// setup starts the review page over a quarantine holding one hostile message; hits counts requests to the
// address its image points at.
func setup(t *testing.T, hits *atomic.Int64) (base string, id string) {
	t.Helper()
	bait := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(bait.Close)
	dir := t.TempDir()
	if err := web.SetPassword(filepath.Join(dir, "web.passwd"), "admin", "browser-pw"); err != nil {
		t.Fatal(err)
	}
	text := ("[store]\npath = \"moat.db\"\n[quarantine]\nrelease_via = \"127.0.0.1:1\"\nlocal_domains = [\"example.org\"]\n" +
		"[web]\npasswords = \"web.passwd\"\n")
	f, err := config.Parse(filepath.Join(dir, "moat.toml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	q, closeQ, err := quarantine.FromConfig(f, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeQ() })
	wc, err := web.LoadConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := web.New(wc, q, log)
	if err != nil {
		t.Fatal(err)
	}
	img := bait.URL + "/x"
	msg := "From: evil@bad.example\r\nTo: alice@example.org\r\nSubject: <script>alert(1)</script><img src=" + img + ">\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n" +
		"--B\r\nContent-Type: text/plain\r\n\r\n<script>alert(2)</script><img src=" + img + ">\r\n" +
		"--B\r\nContent-Type: text/html\r\n\r\n<p>hello</p><script>console.log('ran')</script><img src=\"" + img + "\"><img src=x onerror=\"console.log('onerror')\">\r\n--B--\r\n"
	id = "WEBUI0000001"
	rec := quarantine.Record{ID: id, Time: time.Now(), Sender: "evil@bad.example", Kind: quarantine.KindSpam, Score: 20,
		Subject: "<script>alert(1)</script><img src=" + img + ">", Reasons: []string{"policy/quarantine_score"},
		Recipients: []quarantine.Recipient{{Addr: "alice@example.org", State: quarantine.StateHeld}}}
	if err := q.Keep(context.Background(), rec, source(msg)); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts.URL, id
}

func browser(t *testing.T) (context.Context, *events) {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelT(); cancelB(); cancelA() })
	ev := &events{}
	if err := chromedp.Listen(ctx, func(e any) {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		switch e := e.(type) {
		case *runtime.EventConsoleAPICalled:
			ev.console = append(ev.console, fmt.Sprint(e.Type))
		case *runtime.EventExceptionThrown:
			ev.console = append(ev.console, "exception: "+e.ExceptionDetails.Text)
		case *network.EventRequestWillBeSent:
			ev.requests = append(ev.requests, e.Request.URL)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return ctx, ev
}

type events struct {
	mu       sync.Mutex
	console  []string
	requests []string
}

func TestReviewInBrowser(t *testing.T) {
	var hits atomic.Int64
	base, id := setup(t, &hits)
	ctx, ev := browser(t)
	var list, page, refused string
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.SendKeys(`input[name=user]`, "admin"),
		chromedp.SendKeys(`input[name=password]`, "browser-pw"),
		chromedp.Submit(`form.login`),
		chromedp.WaitVisible(`form.filter`),
		chromedp.SendKeys(`input[name=sender]`, "evil"),
		chromedp.Submit(`form.filter`),
		chromedp.WaitVisible(`table.list`),
		into(&list, chromedp.OuterHTML(`table.list`)),
		chromedp.Click(`a.open`),
		chromedp.WaitVisible(`iframe.htmlpart`),
		chromedp.Sleep(time.Second), // let the frame load whatever it would load
		into(&page, chromedp.OuterHTML(`main`)),
		// A form whose CSRF token was removed is refused.
		into(new(any), chromedp.Evaluate[any](`document.querySelectorAll('section.actions form input[name=csrf]').forEach(e => e.remove())`)),
		chromedp.Click(`button.delete`),
		chromedp.WaitVisible(`ul.notice`),
		into(&refused, chromedp.Text(`main`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list, "/msg/"+id) {
		t.Errorf("the filtered list lacks the message:\n%s", list)
	}
	if !strings.Contains(page, "&lt;script&gt;alert(2)") {
		t.Errorf("the text part is not shown as text:\n%s", page)
	}
	if !strings.Contains(refused, "CSRF") {
		t.Errorf("a form without its token was not refused: %q", refused)
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.console) != 0 {
		t.Errorf("the page ran script: console/exceptions %q", ev.console)
	}
	sawPart := false
	for _, u := range ev.requests {
		sawPart = sawPart || strings.HasPrefix(u, base+"/msg/"+id+"/part/0")
		if !strings.HasPrefix(u, base) && !strings.HasPrefix(u, "data:") {
			t.Errorf("the browser requested %s, outside the review page", u)
		}
	}
	if !sawPart {
		t.Errorf("no request for the HTML part seen (the network listener saw %q)", ev.requests)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the remote image was loaded %d times", n)
	}
}

// into runs a and keeps its value in dst, so that it fits in one chromedp.Do.
func into[T any](dst *T, a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		v, err := a(ctx, t)
		*dst = v
		return chromedp.Void{}, err
	}
}
