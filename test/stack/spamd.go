package stack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Spamd is a running spamd with a local-only private configuration.
type Spamd struct {
	Addr    string // "127.0.0.1:port"
	HomeDir string // -H home of debian-spamd; Bayes lives in HomeDir/.spamassassin
	SiteDir string // --siteconfigpath
	Dir     string
	LogFile string
	p       *proc
	uid     int
	gid     int
}

// SpamdUser is the user spamd runs as.
const SpamdUser = "debian-spamd"

// StartSpamd runs spamd on 127.0.0.1 with a private site config that turns
// off every network test (--local, no DNS, RBL, Razor, Pyzor, DCC), with
// --allow-tell, -u debian-spamd, a private -H home owned by debian-spamd and
// two children. It is ready when PING answers PONG.
func StartSpamd(t testing.TB) *Spamd {
	t.Helper()
	needRoot(t, "spamd -u")
	bin := mustBin(t, "spamd")
	uid, gid := lookupUser(t, SpamdUser)
	dir := TempDir(t, "spamd")
	s := &Spamd{
		Dir:     dir,
		HomeDir: filepath.Join(dir, "home"),
		SiteDir: filepath.Join(dir, "site"),
		LogFile: filepath.Join(dir, "spamd.log"),
		uid:     uid, gid: gid,
	}
	for _, d := range []string{s.HomeDir, filepath.Join(s.HomeDir, ".spamassassin"), s.SiteDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("stack: %v", err)
		}
	}
	pres, _ := filepath.Glob("/etc/spamassassin/*.pre")
	if len(pres) == 0 && InCI() {
		t.Fatalf("stack: no /etc/spamassassin/*.pre (spamassassin installed?)")
	}
	for _, p := range pres {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("stack: %v", err)
		}
		writeFile(t, filepath.Join(s.SiteDir, filepath.Base(p)), string(b), 0o644)
	}
	writeFile(t, filepath.Join(s.SiteDir, "local.cf"), fmt.Sprintf(`# moat test stack: local only
dns_available no
skip_rbl_checks 1
use_razor2 0
use_pyzor 0
ifplugin Mail::SpamAssassin::Plugin::DCC
use_dcc 0
endif
use_bayes 1
bayes_auto_learn 0
bayes_path %s/.spamassassin/bayes
bayes_file_mode 0770
lock_method flock
report_safe 0
`, s.HomeDir), 0o644)
	writeFile(t, s.LogFile, "", 0o644)
	chownR(t, s.HomeDir, uid, gid)
	if err := os.Chown(s.LogFile, uid, gid); err != nil {
		t.Fatalf("stack: %v", err)
	}

	port := FreePort(t)
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin,
		fmt.Sprintf("--listen=127.0.0.1:%d", port),
		"--max-children=2", "--min-children=1",
		"--siteconfigpath="+s.SiteDir,
		"-x", "-L", "--allow-tell",
		"-u", SpamdUser, "-g", SpamdUser,
		"-H", s.HomeDir,
		"--pidfile="+filepath.Join(dir, "spamd.pid"),
		"--syslog="+s.LogFile,
	)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+s.HomeDir)
	s.p = startProc(t, "spamd", cmd, s.LogFile)
	t.Cleanup(s.Stop)
	s.p.waitReady(t, 60*time.Second, exchange("tcp", s.Addr, []byte("PING SPAMC/1.5\r\n\r\n"), "PONG"))
	return s
}

// Stop stops spamd (safe to call twice).
func (s *Spamd) Stop() { s.p.stop(syscall.SIGTERM, 5*time.Second) }

// Log returns spamd's log.
func (s *Spamd) Log() string {
	b, _ := os.ReadFile(s.LogFile)
	return string(b)
}

// SaLearn runs sa-learn as debian-spamd against the same home and site
// config as spamd and returns its combined output and error.
func (s *Spamd) SaLearn(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin := mustBin(t, "sa-learn")
	full := append([]string{"--siteconfigpath=" + s.SiteDir, "--dbpath=" + filepath.Join(s.HomeDir, ".spamassassin")}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Dir = s.HomeDir
	cmd.Env = append(os.Environ(), "HOME="+s.HomeDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// DumpMagic runs `sa-learn --dump magic` against spamd's Bayes database and
// returns its output (the output holds an error message when the database
// does not exist yet; the test is not failed for that).
func (s *Spamd) DumpMagic(t testing.TB) string {
	t.Helper()
	out, err := s.SaLearn(t, "--dump", "magic")
	if err != nil {
		t.Logf("stack: sa-learn --dump magic: %v", err)
	}
	return strings.TrimSpace(out)
}

// Pause freezes the daemon (SIGSTOP): it keeps its socket but answers
// nothing, so clients time out. Resume undoes it; Stop also works when paused.
func (s *Spamd) Pause() { s.p.pause(true) }

// Resume continues a paused daemon (SIGCONT).
func (s *Spamd) Resume() { s.p.pause(false) }
