// Package greylist_test runs greylisting end to end: real Postfix, the built moat binary as its milter, the
// state in SQLite or in a real redis-server.
//
//	SMTP client (this test) → Postfix smtpd → milter: moat serve → [store] SQLite file | redis-server
//	                                ↓ accepted
//	                          virtual(8) → Maildir of bob@moat.test
package greylist_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatmail/moat/store"
	"github.com/moatmail/moat/test/stack"
)

const (
	mailbox = "bob@moat.test"
	delay   = 2 * time.Second
)

type instance struct {
	dir, sock, conf string
	moat            *stack.Moat
	pf              *stack.Postfix
}

// sqliteStore is the [store] table for SQLite in the instance's directory.
func sqliteStore(dir string) string {
	return fmt.Sprintf("[store]\npath = %q\n", filepath.Join(dir, "moat.db"))
}

// redisStore returns the [store] table for the Redis at addr, keys under prefix.
func redisStore(addr, prefix string) func(string) string {
	return func(string) string {
		return fmt.Sprintf("[store]\nbackend = \"redis\"\nredis_addr = %q\nredis_prefix = %q\n", addr, prefix)
	}
}

// startInstance writes a moat configuration (greylisting with a 2 s delay over the given store), starts moat
// and a Postfix that uses it.
func startInstance(t *testing.T, name string, storeTOML func(dir string) string) *instance {
	t.Helper()
	stack.Need(t, "postfix")
	in := &instance{dir: stack.TempDir(t, "greylist-"+name)}
	in.sock = filepath.Join(in.dir, "moat.sock")
	in.conf = filepath.Join(in.dir, "moat.toml")
	conf := fmt.Sprintf(`[milter]
listen = ["unix:%s"]
socket_mode = "0666"

[log]
level = "info"

%s
[checks.greylist]
delay = "%s"
auto_whitelist = 0
`, in.sock, storeTOML(in.dir), delay)
	if err := os.WriteFile(in.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	in.moat = stack.StartMoat(t, in.conf, "unix:"+in.sock)
	in.pf = stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + in.sock, Mailboxes: []string{mailbox}})
	return in
}

func (in *instance) restartMoat(t *testing.T) {
	t.Helper()
	os.Remove(in.sock)
	in.moat = stack.StartMoat(t, in.conf, "unix:"+in.sock)
}

func send(t *testing.T, in *instance, from string) stack.SMTPResult {
	t.Helper()
	return stack.SendMail(t, in.pf.Addr, "mx.sender.example", from, []string{mailbox},
		stack.Message(from, mailbox, "greylist test", "hello"))
}

func wantGreylisted(t *testing.T, r stack.SMTPResult) {
	t.Helper()
	want := fmt.Sprintf("4.7.1 Greylisted, please try again in %d seconds", int(delay.Seconds()))
	if r.Stage != "RCPT" || r.Code != 451 || !strings.Contains(r.Text, want) {
		t.Fatalf("got %v, want 451 %s at RCPT", r, want)
	}
}

// headerValue returns the value of the first header field named name in a delivered message.
func headerValue(msg []byte, name string) (string, bool) {
	head, _, _ := strings.Cut(strings.ReplaceAll(string(msg), "\r\n", "\n"), "\n\n")
	for _, line := range strings.Split(head, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// TestPostfixGreylisting: the first attempt gets 451 4.7.1 at the SMTP client; the retry after the delay is
// delivered with X-Greylist, and a forged X-Greylist from the sender is gone.
func TestPostfixGreylisting(t *testing.T) {
	in := startInstance(t, "postfix", sqliteStore)
	from := "alice@sender.example"
	first := time.Now()
	wantGreylisted(t, send(t, in, from))
	// An early retry is still greylisted (unless the machine was so slow that the delay is already over).
	r := send(t, in, from)
	if time.Since(first) < delay && (r.Code != 451 || !strings.Contains(r.Text, "4.7.1 Greylisted")) {
		t.Fatalf("early retry: %v", r)
	}
	if r.OK() {
		t.Fatalf("early retry accepted %v after the first attempt (delay %v)", time.Since(first), delay)
	}
	time.Sleep(delay + 500*time.Millisecond)
	msg := []byte("X-Greylist: delayed 0 seconds by forger\r\n" + string(stack.Message(from, mailbox, "retry", "hello again")))
	r = stack.SendMail(t, in.pf.Addr, "mx.sender.example", from, []string{mailbox}, msg)
	if !r.OK() {
		t.Fatalf("retry after the delay: %v\n%s", r, in.moat.Log())
	}
	msgs := in.pf.WaitMessages(t, mailbox, 1, 30*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(msgs))
	}
	v, ok := headerValue(msgs[0], "X-Greylist")
	if !ok || !strings.HasPrefix(v, "delayed ") || !strings.Contains(v, " seconds by moat-") || strings.Contains(v, "forger") {
		t.Fatalf("X-Greylist = %q (present %v)\n%s", v, ok, msgs[0])
	}
	if n := strings.Count(strings.ToLower(string(msgs[0])), "\nx-greylist:"); n != 1 {
		t.Fatalf("%d X-Greylist headers, want 1\n%s", n, msgs[0])
	}
	// The next message of the same triplet passes at once, without the header.
	if r := send(t, in, from); !r.OK() {
		t.Fatalf("known triplet: %v", r)
	}
	msgs = in.pf.WaitMessages(t, mailbox, 2, 30*time.Second)
	// The maildir does not keep arrival order within a second: the known triplet's message is the one that
	// is not the retry.
	known := msgs[1]
	if !strings.Contains(string(msgs[0]), "hello again") {
		known = msgs[0]
	}
	if _, ok := headerValue(known, "X-Greylist"); ok {
		t.Fatalf("a known triplet got X-Greylist:\n%s", known)
	}
}

// TestTwoInstancesSharedRedis: two MX hosts (moat + Postfix each) share one Redis; a triplet greylisted by
// the first passes on the second after the delay.
func TestTwoInstancesSharedRedis(t *testing.T) {
	srv := stack.StartRedis(t)
	prefix := fmt.Sprintf("moat-e2e-%d:", time.Now().UnixNano())
	mx1 := startInstance(t, "mx1", redisStore(srv.Addr, prefix))
	mx2 := startInstance(t, "mx2", redisStore(srv.Addr, prefix))
	from := "carol@sender.example"
	wantGreylisted(t, send(t, mx1, from))
	time.Sleep(delay + 500*time.Millisecond)
	// mx2 never saw the sender: it lets the retry through only because it reads mx1's record.
	if r := send(t, mx2, from); !r.OK() {
		t.Fatalf("retry on mx2 after the delay: %v\n%s", r, mx2.moat.Log())
	}
	msgs := mx2.pf.WaitMessages(t, mailbox, 1, 30*time.Second)
	if v, ok := headerValue(msgs[0], "X-Greylist"); !ok || !strings.HasPrefix(v, "delayed ") {
		t.Fatalf("X-Greylist = %q\n%s", v, msgs[0])
	}
	// And the first MX now lets the triplet through too.
	if r := send(t, mx1, from); !r.OK() {
		t.Fatalf("mx1 after the pass on mx2: %v", r)
	}
	// One shared record: two attempts while pending (mx1 greylisted, mx2 passed), two passes, state passed.
	cfg := store.DefaultConfig()
	cfg.Backend, cfg.RedisAddr, cfg.RedisPrefix = "redis", srv.Addr, prefix
	st := store.OpenRedis(cfg)
	defer st.Close()
	var entries []store.GreyEntry
	if err := st.GreyEntries(context.Background(), time.Now(), func(e store.GreyEntry) bool { entries = append(entries, e); return true }); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].State != store.GreyPassed || entries[0].Attempts != 2 || entries[0].Passes != 2 ||
		entries[0].Sender != from || entries[0].Rcpt != mailbox {
		t.Fatalf("shared entries: %+v", entries)
	}
}

// TestKill9DuringBurst: moat (SQLite) is killed with SIGKILL while 8 SMTP sessions at a time retry greylisted
// triplets. After a restart the database opens, and every triplet whose retry Postfix had accepted at RCPT
// (moat answers only after its commit) still passes.
func TestKill9DuringBurst(t *testing.T) {
	in := startInstance(t, "kill9", sqliteStore)
	const n = 120
	sender := func(i int) string { return fmt.Sprintf("burst%d@sender.example", i) }
	rcptOnly := func(i int) stack.SMTPResult {
		// Stop after RCPT: the decision is what counts here, not delivery.
		return stack.SendMailEach(t, in.pf.Addr, "mx.sender.example", sender(i), []string{mailbox},
			stack.Message(sender(i), mailbox, "burst", "x"))
	}
	// Phase 1: every triplet is greylisted once.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if r := rcptOnly(i); r.Code != 451 {
				t.Errorf("first attempt of %d: %v", i, r)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	time.Sleep(delay + 500*time.Millisecond)

	// Phase 2: retries, 8 at a time; SIGKILL after 40 were accepted.
	var acked sync.Map
	var count atomic.Int32
	var killOnce sync.Once
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := rcptOnly(i)
			if len(r.RcptReplies) == 1 && r.RcptReplies[0].Code == 250 {
				acked.Store(i, true)
				if count.Add(1) == 40 {
					killOnce.Do(in.moat.Kill)
				}
			}
		}()
	}
	wg.Wait()
	killOnce.Do(in.moat.Kill) // the burst may have ended first on a fast machine
	if count.Load() < 40 {
		t.Fatalf("only %d retries accepted before the kill", count.Load())
	}

	in.restartMoat(t)
	lost := 0
	acked.Range(func(k, _ any) bool {
		if r := rcptOnly(k.(int)); len(r.RcptReplies) != 1 || r.RcptReplies[0].Code != 250 {
			lost++
			t.Errorf("triplet %d passed before the kill, after restart: %v", k, r)
		}
		return true
	})
	t.Logf("%d retries accepted before SIGKILL; %d lost", count.Load(), lost)
	in.moat.Stop()

	// The database itself: intact, and every acknowledged triplet is recorded as passed.
	st, err := store.OpenSQLite(context.Background(), filepath.Join(in.dir, "moat.db"), false)
	if err != nil {
		t.Fatalf("database does not open after SIGKILL: %v", err)
	}
	defer st.Close()
	if err := st.IntegrityCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
	acked.Range(func(k, _ any) bool {
		id := store.Triplet{Client: "127.0.0.0/24", Sender: sender(k.(int)), Rcpt: mailbox}.ID()
		if e, err := st.GreyEntry(context.Background(), id, time.Now()); err != nil || e.State != store.GreyPassed {
			t.Errorf("triplet %d in the database: %+v, %v", k, e, err)
		}
		return true
	})
}

// TestRedisDownAccepts: with the shared Redis gone, moat accepts mail without greylisting (on_error =
// "accept", the default) and logs the error, instead of tempfailing everything.
func TestRedisDownAccepts(t *testing.T) {
	srv := stack.StartRedis(t)
	in := startInstance(t, "redisdown", redisStore(srv.Addr, "moat-down:"))
	wantGreylisted(t, send(t, in, "dave@sender.example"))
	srv.Stop()
	if r := send(t, in, "erin@sender.example"); !r.OK() {
		t.Fatalf("with redis down: %v\n%s", r, in.moat.Log())
	}
	msgs := in.pf.WaitMessages(t, mailbox, 1, 30*time.Second)
	if _, ok := headerValue(msgs[0], "X-Greylist"); ok {
		t.Fatalf("X-Greylist on a message accepted because the store failed:\n%s", msgs[0])
	}
	log := in.moat.WaitLog(t, "greylist=temperror", 10*time.Second)
	if !strings.Contains(log, "greylist=temperror") || !strings.Contains(log, "store: greylist:") {
		t.Fatalf("the store error is not in moat's log:\n%s", log)
	}
}
