package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/test/stack"
)

func openSQLite(t *testing.T) Store {
	t.Helper()
	st, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "moat.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestSQLite(t *testing.T) {
	runSuite(t, openSQLite)
}

func randomPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "moattest:" + hex.EncodeToString(b[:]) + ":"
}

func TestRedis(t *testing.T) {
	srv := stack.StartRedis(t)
	runSuite(t, func(t *testing.T) Store {
		cfg := DefaultConfig()
		cfg.Backend, cfg.RedisAddr, cfg.RedisPrefix = "redis", srv.Addr, randomPrefix()
		st := OpenRedis(cfg)
		if err := st.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}

// TestRedisReconnect: when the server drops every connection (a restart, a network blip), the same store
// works again without being reopened; with no server at all, operations return errors (the caller applies
// its policy) instead of hanging.
func TestRedisReconnect(t *testing.T) {
	srv := stack.StartRedis(t)
	cfg := DefaultConfig()
	cfg.Backend, cfg.RedisAddr, cfg.RedisPrefix = "redis", srv.Addr, randomPrefix()
	cfg.RedisTimeout = config.Duration(500 * time.Millisecond)
	st := OpenRedis(cfg)
	defer st.Close()
	r := req("192.0.2.0/24", "a@example.com", "b@example.org", t0)
	expectOutcome(t, st, r, GreyNew)
	admin := OpenRedis(cfg)
	defer admin.Close()
	if err := admin.rdb.Do(context.Background(), "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatalf("CLIENT KILL: %v", err)
	}
	var err error
	for i := 0; i < 3; i++ { // the first use may see the dead connection
		if _, err = st.Greylist(context.Background(), r); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("store did not reconnect: %v", err)
	}
	if e, err := st.GreyEntry(context.Background(), r.ID(), t0); err != nil || e.Attempts < 2 {
		t.Fatalf("after reconnect: %+v, %v", e, err)
	}

	down := cfg
	down.RedisAddr = "127.0.0.1:" + strconv.Itoa(stack.FreePort(t))
	gone := OpenRedis(down)
	defer gone.Close()
	if _, err := gone.Greylist(context.Background(), r); err == nil {
		t.Fatal("Greylist with no server: no error")
	}
}

func TestDecodeConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, toml, wantErr string
		want                Config
	}{
		{name: "defaults", toml: "", want: DefaultConfig()},
		{name: "sqlite path", toml: "[store]\npath = \"" + dir + "/x.db\"\nsqlite_synchronous = \"full\"\n"},
		{name: "redis", toml: "[store]\nbackend = \"redis\"\nredis_addr = \"10.0.0.1:6379\"\nredis_db = 2\n"},
		{name: "unknown backend", toml: "[store]\nbackend = \"mysql\"\n", wantErr: "t.toml:2: store.backend: must be \"sqlite\" or \"redis\""},
		{name: "unknown key", toml: "[store]\n\npaht = \"x\"\n", wantErr: "t.toml:3: store.paht: unknown key"},
		{name: "missing dir", toml: "[store]\npath = \"" + dir + "/nope/x.db\"\n", wantErr: "t.toml:2: store.path: directory of the database"},
		{name: "bad sync", toml: "[store]\nsqlite_synchronous = \"off\"\n", wantErr: "store.sqlite_synchronous"},
		{name: "bad redis db", toml: "[store]\nbackend = \"redis\"\nredis_db = -1\n", wantErr: "store.redis_db: must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := config.Parse("t.toml", []byte(tc.toml))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Decode(f)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "defaults" && cfg != tc.want {
				t.Fatalf("cfg = %+v, want %+v", cfg, tc.want)
			}
			if tc.name == "redis" && (cfg.Backend != "redis" || cfg.RedisAddr != "10.0.0.1:6379" || cfg.RedisDB != 2 || cfg.RedisPrefix != "moat:") {
				t.Fatalf("cfg = %+v", cfg)
			}
		})
	}
}

func TestUnwritableDir(t *testing.T) {
	if os.Geteuid() == 0 {
		// root writes anywhere; use a path under a regular file instead.
		file := filepath.Join(t.TempDir(), "file")
		os.WriteFile(file, nil, 0o644)
		if err := checkWritableDir(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("checkWritableDir(file) = %v", err)
		}
		return
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	if err := checkWritableDir(dir); err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("checkWritableDir(read-only) = %v", err)
	}
}

// TestFromConfig: the daemon's store is opened from [store] (creating the SQLite database) and closed by the
// close function it returns; a bad value is a *config.Error at its key and line.
func TestFromConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env.db")
	f, err := config.Parse("t.toml", []byte("[store]\npath = \""+path+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, closeStore, err := FromConfig(f, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend() != "sqlite" || st.(*SQLite).Path() != path {
		t.Fatalf("backend %s", st.Backend())
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not created: %v", err)
	}
	if err := closeStore(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Greylist(context.Background(), req("192.0.2.0/24", "a@example.com", "b@example.org", t0)); err == nil {
		t.Error("the store still answers after close")
	}
	bad, _ := config.Parse("t.toml", []byte("[store]\nbackend = \"x\"\n"))
	var ce *config.Error
	if _, _, err := FromConfig(bad, slog.Default()); !errors.As(err, &ce) || ce.Line != 2 || ce.Key != "store.backend" {
		t.Fatalf("FromConfig(bad) = %v, want a *config.Error at t.toml:2 store.backend", err)
	}
}

func TestPurger(t *testing.T) {
	st := openSQLite(t)
	expectOutcome(t, st, req("192.0.2.0/24", "old@example.com", "x@example.org", time.Now().Add(-72*time.Hour)), GreyNew)
	done := make(chan int, 10)
	stop := startPurger(st, 10*time.Millisecond, func(n int, err error) {
		if err != nil {
			t.Error(err)
		}
		done <- n
	})
	n := <-done
	stop()
	if n != 1 {
		t.Fatalf("purger removed %d, want 1", n)
	}
}
