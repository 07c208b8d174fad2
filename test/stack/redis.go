package stack

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Redis is a running redis-server without persistence.
type Redis struct {
	Addr string // "127.0.0.1:port"
	Dir  string
	p    *proc
}

// StartRedis runs redis-server on 127.0.0.1 with no persistence.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := mustBin(t, "redis-server")
	dir := TempDir(t, "redis")
	port := FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logf := filepath.Join(dir, "redis.log")
	cmd := exec.Command(bin,
		"--bind", "127.0.0.1", "--port", fmt.Sprint(port),
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--dir", dir, "--logfile", logf, "--protected-mode", "no")
	cmd.Dir = dir
	p := startProc(t, "redis-server", cmd, logf)
	r := &Redis{Addr: addr, Dir: dir, p: p}
	t.Cleanup(r.Stop)
	p.waitReady(t, 10*time.Second, exchange("tcp", addr, []byte("PING\r\n"), "+PONG"))
	return r
}

// Stop stops the server (safe to call twice).
func (r *Redis) Stop() { r.p.stop(syscall.SIGTERM, 3*time.Second) }

// Pause freezes the daemon (SIGSTOP): it keeps its socket but answers
// nothing, so clients time out. Resume undoes it; Stop also works when paused.
func (r *Redis) Pause() { r.p.pause(true) }

// Resume continues a paused daemon (SIGCONT).
func (r *Redis) Resume() { r.p.pause(false) }
