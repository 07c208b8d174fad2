package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/test/stack"
)

// Tests for the review's findings; the backend-independent ones run in runSuite for SQLite and Redis.

func netReq(client, network, sender string, now time.Time) GreyRequest {
	r := req(client, sender, "rcpt@example.org", now)
	r.Network = network
	return r
}

// passTriplet greylists a new triplet and retries it after the delay, so that it passes once.
func passTriplet(t *testing.T, st Store, r GreyRequest) {
	t.Helper()
	expectOutcome(t, st, r, GreyNew)
	r.Now = r.Now.Add(testParams.Delay)
	expectOutcome(t, st, r, GreyFirstPass)
}

func runSuiteReview(t *testing.T, open func(t *testing.T) Store) {
	// A network that earned auto-whitelisting is not greylisted again when its next sender
	// passes SPF (the client key becomes spf:DOMAIN), and passes under an spf: key count for the network.
	t.Run("AutoWhitelistNetworkAndSPF", func(t *testing.T) {
		st := open(t)
		const network = "192.0.2.0/24"
		now := t0
		for i := 0; i < testParams.AutoWhitelist; i++ { // three triplets pass from the network, without SPF
			passTriplet(t, st, netReq(network, network, fmt.Sprintf("s%d@example.com", i), now))
			now = now.Add(2 * time.Hour)
		}
		res := expectOutcome(t, st, netReq("spf:new.example", network, "someone@new.example", now), GreyWhitelisted)
		if res.ClientCount != testParams.AutoWhitelist {
			t.Fatalf("client count %d, want %d", res.ClientCount, testParams.AutoWhitelist)
		}
		if _, err := st.GreyClient(context.Background(), "spf:new.example", now); err == nil {
			t.Fatal("a white-listed decision created a record for the spf: key")
		}

		// The other way round: triplets that passed under spf: keys count for their network too.
		st = open(t)
		const net2 = "198.51.100.0/24"
		now = t0
		for i := 0; i < testParams.AutoWhitelist; i++ {
			passTriplet(t, st, netReq(fmt.Sprintf("spf:d%d.example", i), net2, "a@x.example", now))
			now = now.Add(2 * time.Hour)
		}
		c, err := st.GreyClient(context.Background(), net2, now)
		if err != nil || c.Count != testParams.AutoWhitelist {
			t.Fatalf("network record %+v, %v; want count %d", c, err, testParams.AutoWhitelist)
		}
		expectOutcome(t, st, netReq(net2, net2, "b@y.example", now), GreyWhitelisted)
		// An spf: key alone at N white-lists as well, whatever the network.
		st = open(t)
		now = t0
		for i := 0; i < testParams.AutoWhitelist; i++ {
			passTriplet(t, st, netReq("spf:big.example", fmt.Sprintf("203.0.%d.0/24", i), fmt.Sprintf("u%d@big.example", i), now))
			now = now.Add(2 * time.Hour)
		}
		expectOutcome(t, st, netReq("spf:big.example", "203.0.113.0/24", "z@big.example", now), GreyWhitelisted)
	})

	// Listing filters, sorts and limits in the store; an ID prefix selects by range.
	t.Run("GreyList", func(t *testing.T) {
		st := open(t)
		ctx := context.Background()
		var ids []string
		for i := 0; i < 6; i++ {
			r := req("192.0.2.0/24", fmt.Sprintf("User_%d@Example.com", i), "rcpt@example.org", t0.Add(time.Duration(5-i)*time.Minute))
			if i%2 == 0 {
				passTriplet(t, st, r)
			} else {
				expectOutcome(t, st, r, GreyNew)
			}
			ids = append(ids, r.ID())
		}
		now := t0.Add(time.Hour)
		all, err := st.GreyList(ctx, now, GreyQuery{})
		if err != nil || len(all) != 6 {
			t.Fatalf("GreyList(all) = %d entries, %v", len(all), err)
		}
		for i := 1; i < len(all); i++ {
			if all[i].FirstSeen.Before(all[i-1].FirstSeen) {
				t.Fatalf("not oldest first: %v before %v", all[i-1].FirstSeen, all[i].FirstSeen)
			}
		}
		if all[0].Sender != "User_5@Example.com" {
			t.Fatalf("oldest = %s, want User_5@Example.com", all[0].Sender)
		}
		pend, err := st.GreyList(ctx, now, GreyQuery{State: GreyPending, Limit: 2})
		if err != nil || len(pend) != 2 || pend[0].State != GreyPending || pend[0].Sender != "User_5@Example.com" ||
			pend[1].Sender != "User_3@Example.com" {
			t.Fatalf("pending, limit 2 = %+v, %v", pend, err)
		}
		// Substrings are case-insensitive, and LIKE's wildcards match literally.
		got, err := st.GreyList(ctx, now, GreyQuery{Sender: "user_2@EXAMPLE"})
		if err != nil || len(got) != 1 || got[0].ID != ids[2] {
			t.Fatalf("sender user_2@EXAMPLE = %+v, %v", got, err)
		}
		if got, _ := st.GreyList(ctx, now, GreyQuery{Sender: "%"}); len(got) != 0 {
			t.Fatalf("sender %% matched %d entries, want 0", len(got))
		}
		if got, _ := st.GreyList(ctx, now, GreyQuery{Sender: "r__"}); len(got) != 0 {
			t.Fatalf("sender r__ matched %d entries, want 0", len(got))
		}
		if got, _ := st.GreyList(ctx, now, GreyQuery{Client: "192.0.2.", Rcpt: "RCPT@"}); len(got) != 6 {
			t.Fatalf("client and rcpt filter matched %d, want 6", len(got))
		}
		got, err = st.GreyList(ctx, now, GreyQuery{IDPrefix: ids[4][:6], Limit: 2})
		if err != nil || len(got) != 1 || got[0].ID != ids[4] {
			t.Fatalf("ID prefix %s = %+v, %v", ids[4][:6], got, err)
		}
		// Expired entries are not listed: pending ones after the window.
		later := t0.Add(testParams.Window + time.Hour)
		if got, _ := st.GreyList(ctx, later, GreyQuery{}); len(got) != 3 {
			t.Fatalf("after the window: %d entries, want the 3 passed ones", len(got))
		}
	})
}

// [store] redis_db is checked against the server's number of databases.
func TestDecodeRedisDB(t *testing.T) {
	for _, tc := range []struct{ toml, wantErr string }{
		{"redis_db = 15\n", ""},
		{"redis_db = 16\n", "t.toml:3: store.redis_db: must be between 0 and 15"},
		{"redis_db = 20\nredis_databases = 32\n", ""},
		{"redis_databases = 0\n", "store.redis_databases: must be positive"},
	} {
		f, err := config.Parse("t.toml", []byte("[store]\nbackend = \"redis\"\n"+tc.toml))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Decode(f)
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%q: err = %v, want %q", tc.toml, err, tc.wantErr)
		}
	}
}

// A Redis server that refuses the connection's set-up (wrong password, a database it does not
// have) is a configuration error at the key, not a warning; a server that is merely down is a warning.
func TestRedisReplyErrorIsConfigError(t *testing.T) {
	srv := stack.StartRedis(t)
	admin := OpenRedis(Config{RedisAddr: srv.Addr})
	defer admin.Close()
	if err := admin.rdb.Do(context.Background(), "CONFIG", "SET", "requirepass", "s3cret").Err(); err != nil {
		t.Fatalf("CONFIG SET requirepass: %v", err)
	}
	tests := []struct{ name, toml, want string }{
		{"wrong password", "redis_password = \"wrong\"\n", "t.toml:4: store.redis_password: "},
		{"no password", "", "store.redis_password: "},
		{"database out of range", "redis_password = \"s3cret\"\nredis_databases = 64\nredis_db = 40\n", "t.toml:6: store.redis_db: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := config.Parse("t.toml", []byte("[store]\nbackend = \"redis\"\nredis_addr = \""+srv.Addr+"\"\n"+tc.toml))
			if err != nil {
				t.Fatal(err)
			}
			_, err = fromConfig(t, f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("FromConfig = %v, want an error containing %q", err, tc.want)
			}
			if _, err := Load(context.Background(), f); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	t.Run("right password", func(t *testing.T) {
		f, _ := config.Parse("t.toml", []byte("[store]\nbackend = \"redis\"\nredis_addr = \""+srv.Addr+"\"\nredis_password = \"s3cret\"\nredis_db = 3\n"))
		st, err := fromConfig(t, f)
		if err != nil {
			t.Fatal(err)
		}
		expectOutcome(t, st, req("192.0.2.0/24", "a@example.com", "b@example.org", t0), GreyNew)
	})
	t.Run("server down is not a config error", func(t *testing.T) {
		f, _ := config.Parse("t.toml", []byte(fmt.Sprintf("[store]\nbackend = \"redis\"\nredis_addr = \"127.0.0.1:%d\"\nredis_timeout = \"300ms\"\n", stack.FreePort(t))))
		if _, err := fromConfig(t, f); err != nil {
			t.Fatalf("FromConfig with the server down = %v, want a store that retries later", err)
		}
	})
}

// The greylisting script is never resent. A proxy in front of the real server lets the script
// through but drops the server's reply and closes the connection, as a connection lost after the server ran
// the script. go-redis retries a command that met EOF; for the script that would run it a second time and
// count two attempts for one (go-redis v9.23 does not retry after a read timeout, but does after EOF).
func TestRedisScriptNotResent(t *testing.T) {
	srv := stack.StartRedis(t)
	px := startDropProxy(t, srv.Addr)
	cfg := DefaultConfig()
	cfg.Backend, cfg.RedisAddr, cfg.RedisPrefix = "redis", px.addr, randomPrefix()
	st := OpenRedis(cfg)
	defer st.Close()
	r := req("192.0.2.0/24", "a@example.com", "b@example.org", t0)
	expectOutcome(t, st, r, GreyNew) // loads the script, and the connection is set up
	r.Now = t0.Add(time.Minute)
	px.dropNextReply.Store(true)
	if _, err := st.Greylist(context.Background(), r); err == nil {
		t.Fatal("Greylist whose reply was lost: no error")
	}
	e, err := st.GreyEntry(context.Background(), r.ID(), t0)
	if err != nil || e.Attempts != 2 {
		t.Fatalf("after one decision whose reply was lost: attempts %d (%v), want 2: the script ran twice", e.Attempts, err)
	}
}

// dropProxy forwards TCP to a real server; with dropNextReply set, the next bytes the server sends are
// dropped and both connections closed.
type dropProxy struct {
	addr          string
	dropNextReply atomic.Bool
}

func startDropProxy(t *testing.T, target string) *dropProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	px := &dropProxy{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(s, c); s.Close() }()
			go func() {
				defer c.Close()
				defer s.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						if px.dropNextReply.CompareAndSwap(true, false) {
							return
						}
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return px
}

// A relative path is relative to the configuration file, whatever the working directory;
// command-line tools never create the database, and say which absolute path they looked at.
func TestRelativePath(t *testing.T) {
	confDir, elsewhere := t.TempDir(), t.TempDir()
	wd, _ := os.Getwd()
	if err := os.Chdir(elsewhere); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	f, err := config.Parse(filepath.Join(confDir, "moat.toml"), []byte("[store]\npath = \"state/moat.db\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(confDir, "state", "moat.db")
	if _, err := Decode(f); err == nil || !strings.Contains(err.Error(), "directory of the database") {
		t.Fatalf("Decode with the config's state/ missing = %v, want a directory error", err)
	}
	os.Mkdir(filepath.Join(elsewhere, "state"), 0o755) // only the working directory has state/: not used
	if _, err := Decode(f); err == nil {
		t.Fatal("Decode looked for state/ in the working directory")
	}
	os.Mkdir(filepath.Join(confDir, "state"), 0o755)

	_, err = Load(context.Background(), f)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Load before the database exists = %v, want an error naming %s", err, want)
	}
	if _, err := os.Stat(want); err == nil {
		t.Fatal("Load created the database")
	}

	st, closeStore, err := FromConfig(f, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if p := st.(*SQLite).Path(); p != want {
		t.Fatalf("serve opened %s, want %s", p, want)
	}
	expectOutcome(t, st, req("192.0.2.0/24", "a@example.com", "b@example.org", t0), GreyNew)
	closeStore()
	if _, err := os.Stat(filepath.Join(elsewhere, "state", "moat.db")); err == nil {
		t.Fatal("a database was created in the working directory")
	}
	cli, err := Load(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if l, err := cli.GreyList(context.Background(), t0, GreyQuery{}); err != nil || len(l) != 1 {
		t.Fatalf("the command-line store sees %d entries (%v), want the one serve wrote", len(l), err)
	}
}

// replyErr is a reply error of the server, as go-redis returns it (redis.Error).
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

// redisErrorKey: only refusals that configuration fixes are configuration errors; a server that is loading
// its data set or busy is transient.
func TestRedisErrorKey(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{replyErr("WRONGPASS invalid username-password pair or user is disabled."), "redis_password"},
		{replyErr("NOAUTH Authentication required."), "redis_password"},
		{replyErr("ERR DB index is out of range"), "redis_db"},
		{replyErr("LOADING Redis is loading the dataset in memory"), ""},
		{replyErr("BUSY Redis is busy running a script."), ""},
		{fmt.Errorf("store: redis ping: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), ""},
		{fmt.Errorf("store: redis ping: %w", replyErr("WRONGPASS x")), "redis_password"},
	} {
		if got := redisErrorKey(tc.err); got != tc.want {
			t.Errorf("redisErrorKey(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// fromConfig opens the daemon's store from f and closes it when the test ends.
func fromConfig(t *testing.T, f *config.File) (Store, error) {
	st, closeStore, err := FromConfig(f, slog.Default())
	if err == nil {
		t.Cleanup(func() { closeStore() })
	}
	return st, err
}
