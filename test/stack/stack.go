// Package stack starts and stops real mail daemons (unbound, redis, clamd,
// spamd, Postfix, Sendmail) and the moat binary on loopback for tests.
//
// It installs nothing: every daemon must already be on the machine (.ci/run
// installs them in CI). When a binary is missing the test is skipped, or,
// when the environment has CI=true, it fails naming the binary.
//
// Every daemon runs in its own temporary directory (kept when the test
// fails), binds 127.0.0.1 on a free port, runs in its own process group and
// is stopped in t.Cleanup.
package stack

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Well-known test strings.
const (
	// EICAR is the 68-byte anti-virus test file.
	EICAR = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`
	// GTUBE makes SpamAssassin score a message 1000.
	GTUBE = `XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X`
	// ClamAVTestFilesDir holds the samples of the clamav-testfiles package.
	ClamAVTestFilesDir = "/usr/share/clamav-testfiles"
)

// InCI reports whether the environment says CI=true.
func InCI() bool { return strings.EqualFold(os.Getenv("CI"), "true") }

// extra directories searched for binaries besides $PATH.
var binDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/lib/postfix/sbin"}

// lookBin finds a binary by name in $PATH or the usual system directories.
// An absolute path is checked as is.
func lookBin(name string) (string, error) {
	if filepath.IsAbs(name) {
		if fi, err := os.Stat(name); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return name, nil
		}
		return "", fmt.Errorf("%s not found", name)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range binDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in $PATH or %s", name, strings.Join(binDirs, ":"))
}

// Need skips the test (or fails it when CI=true) if any of the binaries is absent.
func Need(t testing.TB, binaries ...string) {
	t.Helper()
	var missing []string
	for _, b := range binaries {
		if _, err := lookBin(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return
	}
	if InCI() {
		t.Fatalf("stack: required binaries missing (CI=true): %s", strings.Join(missing, ", "))
		return
	}
	t.Skipf("stack: binaries not installed: %s", strings.Join(missing, ", "))
}

// Bin returns the path of an installed binary (searched in $PATH and the
// usual sbin directories), after Need.
func Bin(t testing.TB, name string) string {
	t.Helper()
	return mustBin(t, name)
}

// mustBin returns the path of a binary, calling Need first.
func mustBin(t testing.TB, name string) string {
	t.Helper()
	Need(t, name)
	p, _ := lookBin(name)
	return p
}

// FreePort returns a port on 127.0.0.1 that is free for both TCP and UDP
// (so DNS servers can use it too). Ports are drawn at random from
// 20000-32767, below Linux's ephemeral range, so that outgoing connections
// made meanwhile cannot take them; one test binary never hands out the same
// port twice.
func FreePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 200; i++ {
		port := 20000 + rand.IntN(32768-20000)
		if i >= 150 {
			port = 0 // fall back to the kernel's choice
		}
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		port = l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		if !reservePort(port) {
			continue
		}
		return port
	}
	t.Fatalf("stack: FreePort: no free port found")
	return 0
}

var (
	portMu    sync.Mutex
	handedOut = map[int]bool{}
)

// reservePort makes sure one test binary never hands out the same port twice
// (the kernel may give the same ephemeral port again before a daemon binds it).
func reservePort(p int) bool {
	portMu.Lock()
	defer portMu.Unlock()
	if handedOut[p] {
		return false
	}
	handedOut[p] = true
	return true
}

// TempDir makes a private directory for a daemon, mode 0755 so that daemons
// which drop privileges can traverse it. It is removed at cleanup unless the
// test failed, in which case its path is logged.
func TempDir(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "moat-"+name+"-")
	if err != nil {
		t.Fatalf("stack: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("MOAT_STACK_KEEP") != "" {
			t.Logf("stack: kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// needRoot skips the test (fails it when CI=true) unless it runs as root.
func needRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		t.Fatalf("stack: %s needs root (CI=true)", what)
	}
	t.Skipf("stack: %s needs root", what)
}

// lookupUser returns the uid and gid of a system user.
func lookupUser(t testing.TB, name string) (int, int) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		if InCI() {
			t.Fatalf("stack: system user %s missing: %v", name, err)
		}
		t.Skipf("stack: system user %s missing: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// chownR changes the owner of a tree.
func chownR(t testing.TB, dir string, uid, gid int) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatalf("stack: chown %s: %v", dir, err)
	}
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatalf("stack: %v", err)
	}
}

// syncBuffer is a goroutine-safe output sink.
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

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func readTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return tail(string(b), n)
}

// proc is a daemon started in its own process group.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
	err     error // valid after done is closed
	logs    []string
	mu      sync.Mutex
	stopped bool
}

// startProc starts cmd in a new session (own process group) and captures its
// output. logs are files whose tails are shown in error messages.
func startProc(t testing.TB, name string, cmd *exec.Cmd, logs ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{}), logs: logs}
	if cmd.Stdout == nil {
		cmd.Stdout = p.out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.out
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	// A grandchild that escaped the process group must not keep Wait (and
	// so Stop) blocked on the output pipe.
	cmd.WaitDelay = 3 * time.Second
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		t.Fatalf("stack: start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// diag returns the tail of the process output and of its log files.
func (p *proc) diag() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s command: %s\n", p.name, strings.Join(p.cmd.Args, " "))
	if p.exited() {
		fmt.Fprintf(&b, "%s exited: %v\n", p.name, p.err)
	}
	if o := p.out.String(); o != "" {
		fmt.Fprintf(&b, "--- %s output (tail) ---\n%s\n", p.name, tail(o, 30))
	}
	for _, l := range p.logs {
		fmt.Fprintf(&b, "--- %s (tail) ---\n%s\n", l, readTail(l, 30))
	}
	return b.String()
}

// stop sends sig to the process group, waits up to grace, then SIGKILLs the group.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
		return
	}
	p.stopped = true
	p.mu.Unlock()
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGCONT) // in case it was paused
	_ = syscall.Kill(-pgid, sig)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	// Whatever is left in the group (children of a daemon) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// pause stops (SIGSTOP) or continues (SIGCONT) the whole process group.
func (p *proc) pause(stop bool) {
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// waitReady polls check until it returns nil, the process exits, or timeout.
func (p *proc) waitReady(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if p.exited() {
			t.Fatalf("stack: %s exited before it was ready (last check: %v)\n%s", p.name, last, p.diag())
		}
		last = check()
		if last == nil {
			return
		}
		if time.Now().After(deadline) {
			p.stop(syscall.SIGKILL, time.Second)
			t.Fatalf("stack: %s not ready after %v: %v\n%s", p.name, timeout, last, p.diag())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialCheck returns a check that connects and optionally exchanges a request.
// network is "tcp" or "unix".
func exchange(network, addr string, req []byte, want string) func() error {
	return func() error {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if len(req) > 0 {
			if _, err := c.Write(req); err != nil {
				return err
			}
		}
		if want == "" {
			return nil
		}
		buf := make([]byte, 0, 512)
		tmp := make([]byte, 512)
		for {
			n, err := c.Read(tmp)
			buf = append(buf, tmp[:n]...)
			if bytes.Contains(buf, []byte(want)) {
				return nil
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("got %q, want %q", buf, want)
				}
				return fmt.Errorf("got %q (%v), want %q", buf, err, want)
			}
		}
	}
}
