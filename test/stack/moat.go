package stack

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// RepoRoot returns the directory holding go.mod, found by walking up from the
// current directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("stack: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("stack: no go.mod above the current directory")
		}
		dir = parent
	}
}

// MoatBuildTags are the build tags BuildMoat uses: moattest compiles in the
// "test" check that end-to-end tests script verdicts with.
var MoatBuildTags = "moattest"

// BuildMoat builds ./cmd/moat (with -tags MoatBuildTags) once per test binary and returns the path of
// the binary. The environment variable MOAT_BIN, when set, names a binary to
// use instead.
func BuildMoat(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MOAT_BIN"); p != "" {
		return p
	}
	root := RepoRoot(t)
	buildOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(runtimeGOROOT(), "bin", "go")
		}
		// One binary per test process, in a shared directory; binaries of
		// test processes that are gone are removed here.
		dir := filepath.Join(os.TempDir(), "moat-stack-build")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		removeStaleBuilds(dir)
		out := filepath.Join(dir, fmt.Sprintf("moat.%d", os.Getpid()))
		// -tags moattest compiles in the scripted "test" check the end-to-end tests configure.
		cmd := exec.Command(gobin, "build", "-tags", "moattest", "-o", out, "./cmd/moat")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/moat: %v\n%s", err, b)
			return
		}
		buildPath = out
	})
	if buildErr != nil {
		t.Fatalf("stack: %v", buildErr)
	}
	return buildPath
}

// removeStaleBuilds deletes moat.PID binaries whose process has ended.
func removeStaleBuilds(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "moat.%d", &pid); err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func runtimeGOROOT() string {
	if r := os.Getenv("GOROOT"); r != "" {
		return r
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "/usr/local/go"
	}
	return strings.TrimSpace(string(out))
}

// Moat is a running `moat serve` process.
type Moat struct {
	Bin    string
	Config string
	p      *proc
}

// MoatReadyTimeout bounds how long StartMoat waits for the listeners.
var MoatReadyTimeout = 30 * time.Second

// StartMoat runs `moat serve -c configPath` (building moat first if needed)
// and waits until every address in waitFor accepts connections. Addresses are
// "unix:/path" or "tcp:127.0.0.1:port" (a bare "127.0.0.1:port" is TCP). Its
// stdout and stderr are kept for Log. It is stopped with SIGTERM at cleanup.
func StartMoat(t testing.TB, configPath string, waitFor ...string) *Moat {
	t.Helper()
	return StartMoatArgs(t, []string{"serve", "-c", configPath}, waitFor...)
}

// StartMoatArgs is StartMoat with the full argument list given.
func StartMoatArgs(t testing.TB, args []string, waitFor ...string) *Moat {
	t.Helper()
	bin := BuildMoat(t)
	cmd := exec.Command(bin, args...)
	m := &Moat{Bin: bin}
	for i, a := range args {
		if (a == "-c" || a == "--config") && i+1 < len(args) {
			m.Config = args[i+1]
			cmd.Dir = filepath.Dir(args[i+1])
		}
	}
	m.p = startProc(t, "moat", cmd)
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			t.Logf("stack: moat output (tail):\n%s", tail(m.Log(), 60))
		}
	})
	for _, w := range waitFor {
		network, addr := "tcp", w
		switch {
		case strings.HasPrefix(w, "unix:"):
			network, addr = "unix", strings.TrimPrefix(w, "unix:")
		case strings.HasPrefix(w, "tcp:"):
			addr = strings.TrimPrefix(w, "tcp:")
		case strings.HasPrefix(w, "inet:"):
			addr = strings.TrimPrefix(w, "inet:")
		}
		m.p.waitReady(t, MoatReadyTimeout, func() error {
			c, err := net.DialTimeout(network, addr, time.Second)
			if err != nil {
				return err
			}
			c.Close()
			return nil
		})
	}
	return m
}

// Log returns everything moat wrote to stdout and stderr so far.
func (m *Moat) Log() string { return m.p.out.String() }

// WaitLog waits up to timeout for moat's output to contain s and returns the
// output; it fails the test on timeout. Moat writes a message's summary line
// after it answers the MTA, so a test holding the SMTP reply can be ahead of
// the log.
func (m *Moat) WaitLog(t testing.TB, s string, timeout time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		out := m.Log()
		if strings.Contains(out, s) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("stack: moat's log has no %q after %v:\n%s", s, timeout, tail(out, 30))
			return out
		}
	}
}

// Pid returns the process id.
func (m *Moat) Pid() int { return m.p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (m *Moat) Exited() bool { return m.p.exited() }

// Wait waits up to timeout for the process to end by itself and returns its
// exit error (nil for status 0); it fails the test on timeout.
func (m *Moat) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-m.p.done:
		return m.p.err
	case <-time.After(timeout):
		t.Fatalf("stack: moat still running after %v\n%s", timeout, tail(m.Log(), 30))
		return nil
	}
}

// Signal sends a signal to the moat process (not its group), e.g. SIGHUP.
func (m *Moat) Signal(sig syscall.Signal) error { return m.p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits up to 10 s for moat to exit (then SIGKILL).
func (m *Moat) Stop() { m.p.stop(syscall.SIGTERM, 10*time.Second) }

// Kill sends SIGKILL.
func (m *Moat) Kill() { m.p.stop(syscall.SIGKILL, time.Second) }
