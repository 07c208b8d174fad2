package stack

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ClamdOptions configures StartClamd.
type ClamdOptions struct {
	// StreamMaxLength is clamd's StreamMaxLength (e.g. "1M"); "" keeps the default (25M).
	StreamMaxLength string
	// ExtraSigs are more signature files (file name -> content) for the
	// database directory, e.g. {"extra.ndb": "Name:0:*:6869"}.
	ExtraSigs map[string]string
}

// Clamd is a running clamd with a private signature database.
type Clamd struct {
	Socket  string // unix socket path
	TCPAddr string // "127.0.0.1:port"
	Dir     string
	p       *proc
}

// Signature names in the harness's database. clamd reports them with ".UNOFFICIAL"
// appended, e.g. "stream: Eicar-Test-Signature.UNOFFICIAL FOUND".
const (
	ClamEicarHashSig = "Eicar-Test-File"      // .hdb: md5 of the 68-byte EICAR file
	ClamEicarBodySig = "Eicar-Test-Signature" // .ndb: EICAR string anywhere in a file
	ClamTestFileSig  = "ClamAV-Test-File"     // .hdb: the file inside all clamav-testfiles samples
)

// StartClamd runs clamd with a private DatabaseDirectory holding the EICAR
// hash and body signatures and the ClamAV-Test-File hash (plus ExtraSigs), a
// unix socket in a private directory and a TCP socket on loopback. It is
// ready when zPING answers PONG.
func StartClamd(t testing.TB, opts ClamdOptions) *Clamd {
	t.Helper()
	bin := mustBin(t, "clamd")
	dir := TempDir(t, "clamd")
	db := filepath.Join(dir, "db")
	sock := filepath.Join(dir, "run")
	tmp := filepath.Join(dir, "tmp")
	for _, d := range []string{db, sock, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("stack: %v", err)
		}
	}
	writeFile(t, filepath.Join(db, "moat-test.hdb"),
		"44d88612fea8a8f36de82e1278abb02f:68:"+ClamEicarHashSig+"\n"+
			"aa15bcf478d165efd2065190eb473bcb:544:"+ClamTestFileSig+"\n", 0o644)
	writeFile(t, filepath.Join(db, "moat-test.ndb"),
		ClamEicarBodySig+":0:*:"+hex.EncodeToString([]byte(EICAR))+"\n", 0o644)
	var names []string
	for n := range opts.ExtraSigs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		writeFile(t, filepath.Join(db, filepath.Base(n)), opts.ExtraSigs[n], 0o644)
	}

	c := &Clamd{Socket: filepath.Join(sock, "clamd.sock"), Dir: dir}
	port := FreePort(t)
	c.TCPAddr = fmt.Sprintf("127.0.0.1:%d", port)
	logf := filepath.Join(dir, "clamd.log")
	var b strings.Builder
	fmt.Fprintf(&b, `Foreground yes
LocalSocket %s
LocalSocketMode 660
FixStaleSocket yes
TCPSocket %d
TCPAddr 127.0.0.1
DatabaseDirectory %s
TemporaryDirectory %s
PidFile %s
LogFile %s
LogTime yes
LogVerbose no
SelfCheck 0
MaxThreads 4
MaxConnectionQueueLength 30
ReadTimeout 30
CommandReadTimeout 10
Bytecode no
`, c.Socket, port, db, tmp, filepath.Join(dir, "clamd.pid"), logf)
	if opts.StreamMaxLength != "" {
		fmt.Fprintf(&b, "StreamMaxLength %s\n", opts.StreamMaxLength)
	}
	conf := filepath.Join(dir, "clamd.conf")
	writeFile(t, conf, b.String(), 0o644)
	cmd := exec.Command(bin, "--config-file="+conf, "--foreground")
	cmd.Dir = dir
	c.p = startProc(t, "clamd", cmd, logf)
	t.Cleanup(c.Stop)
	c.p.waitReady(t, 60*time.Second, exchange("unix", c.Socket, []byte("zPING\x00"), "PONG"))
	c.p.waitReady(t, 10*time.Second, exchange("tcp", c.TCPAddr, []byte("zPING\x00"), "PONG"))
	return c
}

// Stop stops clamd (safe to call twice).
func (c *Clamd) Stop() { c.p.stop(syscall.SIGTERM, 5*time.Second) }

// Log returns clamd's log file.
func (c *Clamd) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "clamd.log"))
	return string(b)
}

// Pause freezes the daemon (SIGSTOP): it keeps its socket but answers
// nothing, so clients time out. Resume undoes it; Stop also works when paused.
func (c *Clamd) Pause() { c.p.pause(true) }

// Resume continues a paused daemon (SIGCONT).
func (c *Clamd) Resume() { c.p.pause(false) }
