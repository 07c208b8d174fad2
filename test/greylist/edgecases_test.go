package greylist_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/moatmail/moat/test/stack"
)

// runMoat runs the built binary in dir and returns its combined output and exit status.
func runMoat(t *testing.T, bin, dir string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

// TestRelativeStorePath: `path = "moat.db"` is next to the configuration file for every
// command, wherever it runs; `moat greylist` does not create a database and names the path it looked at.
func TestRelativeStorePath(t *testing.T) {
	bin := stack.BuildMoat(t)
	confDir, cwd1, cwd2 := t.TempDir(), t.TempDir(), t.TempDir()
	conf := filepath.Join(confDir, "moat.toml")
	os.WriteFile(conf, []byte("[milter]\nlisten = [\"unix:"+confDir+"/m.sock\"]\n[store]\npath = \"moat.db\"\n[checks.greylist]\n"), 0o644)
	msg := filepath.Join(confDir, "m.eml")
	os.WriteFile(msg, stack.Message("alice@sender.example", "bob@moat.test", "scan", "hi"), 0o644)
	db := filepath.Join(confDir, "moat.db")

	out, code := runMoat(t, bin, cwd1, "greylist", "-c", conf, "list")
	if code != 1 || !strings.Contains(out, db) {
		t.Fatalf("greylist list before any database: exit %d, want 1 and the path %s:\n%s", code, db, out)
	}
	for _, p := range []string{db, filepath.Join(cwd1, "moat.db")} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("moat greylist created %s", p)
		}
	}
	out, code = runMoat(t, bin, cwd1, "scan", "-c", conf, "-update-state", "-ip", "192.0.2.5", "-helo", "mx.sender.example",
		"-from", "alice@sender.example", "-rcpt", "bob@moat.test", msg)
	if !strings.Contains(out, "4.7.1 Greylisted") {
		t.Fatalf("scan: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(cwd1, "moat.db")); err == nil {
		t.Fatal("moat scan created moat.db in its working directory")
	}
	out, code = runMoat(t, bin, cwd2, "greylist", "-c", conf, "list")
	if code != 0 || !strings.Contains(out, "bob@moat.test") {
		t.Fatalf("greylist list from another directory: exit %d\n%s", code, out)
	}
}

// TestRedisRefusalIsConfigError: a wrong Redis password or a database the server does not
// have is reported by check-config, and moat serve does not start, instead of greylisting silently off.
func TestRedisRefusalIsConfigError(t *testing.T) {
	bin := stack.BuildMoat(t)
	srv := stack.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	if err := admin.ConfigSet(context.Background(), "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct{ name, extra, want string }{
		{"wrong password", "redis_password = \"nope\"\n", "moat.toml:7: store.redis_password"},
		{"database out of range", "redis_password = \"s3cret\"\nredis_databases = 64\nredis_db = 40\n", "moat.toml:9: store.redis_db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := filepath.Join(dir, "moat.toml")
			os.WriteFile(conf, []byte(fmt.Sprintf("[milter]\nlisten = [\"unix:%s/m.sock\"]\n[checks.greylist]\n\n[store]\nbackend = \"redis\"\n%sredis_addr = %q\n",
				dir, tc.extra, srv.Addr)), 0o644)
			out, code := runMoat(t, bin, dir, "check-config", "-c", conf)
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Fatalf("check-config: exit %d, want an error containing %q:\n%s", code, tc.want, out)
			}
		})
	}
	conf := filepath.Join(dir, "ok.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[milter]\nlisten = [\"unix:%s/m.sock\"]\n[checks.greylist]\n[store]\nbackend = \"redis\"\nredis_password = \"s3cret\"\nredis_addr = %q\n",
		dir, srv.Addr)), 0o644)
	if out, code := runMoat(t, bin, dir, "check-config", "-c", conf); code != 0 {
		t.Fatalf("check-config with the right password: exit %d\n%s", code, out)
	}
}

// TestRedisHangCircuitBreaker: with Redis frozen (it keeps its socket and answers nothing),
// the first recipient waits redis_timeout and is accepted; the next ones within the back-off do not ask
// Redis at all, and the failure is logged once.
func TestRedisHangCircuitBreaker(t *testing.T) {
	srv := stack.StartRedis(t)
	in := startInstance(t, "redishang", redisStore(srv.Addr, "moat-hang:"))
	wantGreylisted(t, send(t, in, "dave@sender.example"))
	srv.Pause()
	defer srv.Resume()
	for _, from := range []string{"erin@sender.example", "frank@sender.example", "grace@sender.example"} {
		if r := send(t, in, from); !r.OK() {
			t.Fatalf("with redis frozen, %s: %v\n%s", from, r, in.moat.Log())
		}
	}
	log := in.moat.Log()
	if n := strings.Count(log, "the store failed"); n != 1 {
		t.Fatalf("store failure logged %d times, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "store skipped after a recent failure") {
		t.Fatalf("later recipients still asked the frozen store:\n%s", log)
	}
}
