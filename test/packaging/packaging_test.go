// Package packaging tests the Debian package end to end, on the real system: `make deb` builds it, dpkg
// installs it, the installed moat validates the installed /etc/moat/moat.toml, and remove and purge leave
// nothing behind. It needs root and dpkg (CI runs as root); it refuses to run where a moat package or user
// already exists, and it purges the package whatever happens, so that no system moat outlives it. Nothing
// is started: the package starts the unit only where systemd runs, which the test machines do not.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

func need(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "installing a package needs root"
	} else if _, err := exec.LookPath("dpkg"); err != nil {
		why = "dpkg not found"
	}
	if why == "" {
		return
	}
	if stack.InCI() {
		t.Fatalf("CI=true: %s", why)
	}
	t.Skip(why)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func userExists(name string) bool { return exec.Command("getent", "passwd", name).Run() == nil }

func groupExists(name string) bool { return exec.Command("getent", "group", name).Run() == nil }

func installed() bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "moat").Output()
	return err == nil && strings.Contains(string(out), "installed")
}

// groupsOf is the supplementary groups of a user, "" when there is no such user.
func groupsOf(user string) string {
	out, err := exec.Command("id", "-nG", user).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// moatRunning reports a process running the installed binary.
func moatRunning() bool {
	ps, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range ps {
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, "/usr/bin/moat") {
			return true
		}
	}
	return false
}

func TestDebianPackage(t *testing.T) {
	need(t)
	if installed() || userExists("moat") || groupExists("moat") || exists("/etc/moat") || exists("/usr/bin/moat") {
		t.Fatal("a moat package, user, group or /etc/moat already exists on this machine: refusing to install over it")
	}
	postfixGroups := groupsOf("postfix")
	t.Cleanup(func() {
		if installed() || exists("/usr/bin/moat") {
			out, err := exec.Command("dpkg", "--purge", "moat").CombinedOutput()
			if err != nil {
				t.Errorf("cleanup: dpkg --purge moat: %v\n%s", err, out)
			}
		}
	})

	dir := t.TempDir()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	mk := exec.Command("make", "deb", "DEB_DIR="+dir, "GO="+goBin)
	mk.Dir = stack.RepoRoot(t)
	start := time.Now()
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "moat_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v in %s, want one moat_*.deb", debs, dir)
	}
	t.Logf("built %s in %s", filepath.Base(debs[0]), time.Since(start).Round(time.Second))
	info := run(t, "dpkg-deb", "-I", debs[0])
	for _, want := range []string{"Package: moat", "Depends: adduser", "conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("package control lacks %q:\n%s", want, info)
		}
	}

	run(t, "dpkg", "--install", debs[0])
	if !installed() {
		t.Fatal("dpkg --install did not leave moat installed")
	}
	for _, p := range []string{"/usr/bin/moat", "/etc/moat/moat.toml", "/lib/systemd/system/moat.service",
		"/var/lib/moat", "/usr/share/doc/moat/examples/grafana-dashboard.json", "/usr/share/doc/moat/examples/prometheus-alerts.yml"} {
		if !exists(p) {
			t.Errorf("%s is not installed", p)
		}
	}
	if !userExists("moat") || !groupExists("moat") {
		t.Error("the moat user and group were not created")
	}
	if got := strings.TrimSpace(run(t, "stat", "-c", "%U:%G %a", "/var/lib/moat")); got != "moat:moat 750" {
		t.Errorf("/var/lib/moat is %q, want moat:moat 750", got)
	}
	if got := strings.TrimSpace(run(t, "stat", "-c", "%U:%G %a", "/etc/moat/moat.toml")); got != "root:moat 640" {
		t.Errorf("/etc/moat/moat.toml is %q, want root:moat 640", got)
	}
	if conf := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "moat"); !strings.Contains(conf, "/etc/moat/moat.toml") {
		t.Errorf("/etc/moat/moat.toml is not a conffile: %q", conf)
	}
	if postfixGroups != "" && !strings.Contains(" "+groupsOf("postfix")+" ", " moat ") {
		t.Errorf("the postfix user was not added to group moat (groups: %s)", groupsOf("postfix"))
	}
	out := run(t, "/usr/bin/moat", "check-config", "-c", "/etc/moat/moat.toml")
	if !strings.Contains(out, "/etc/moat/moat.toml: ok") || !strings.Contains(out, "listen: unix:/run/moat/moat.sock") {
		t.Errorf("moat check-config on the installed file:\n%s", out)
	}
	// The production file is not the demo file: the milter socket is in /run/moat and the state in /var/lib/moat.
	conf, _ := os.ReadFile("/etc/moat/moat.toml")
	if !strings.Contains(string(conf), `path = "/var/lib/moat/moat.db"`) {
		t.Error("the installed configuration does not keep its state in /var/lib/moat")
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/moat.service").CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify of the installed unit: %v\n%s", err, out)
		}
	} else if stack.InCI() {
		t.Error("CI=true: systemd-analyze not found (Debian package systemd)")
	}
	if moatRunning() {
		t.Error("installing the package started moat on a machine without systemd")
	}

	run(t, "dpkg", "--remove", "moat")
	if exists("/usr/bin/moat") || exists("/lib/systemd/system/moat.service") {
		t.Error("dpkg --remove left the binary or the unit")
	}
	if !exists("/etc/moat/moat.toml") {
		t.Error("dpkg --remove deleted the conffile (only purge should)")
	}

	run(t, "dpkg", "--purge", "moat")
	for _, p := range []string{"/etc/moat", "/var/lib/moat", "/usr/share/doc/moat", "/run/moat",
		"/etc/systemd/system/multi-user.target.wants/moat.service"} {
		if exists(p) {
			t.Errorf("purge left %s", p)
		}
	}
	if userExists("moat") || groupExists("moat") {
		t.Error("purge left the moat user or group")
	}
	if got := groupsOf("postfix"); got != postfixGroups {
		t.Errorf("the postfix user's groups are %q after purge, were %q", got, postfixGroups)
	}
	if installed() {
		t.Error("moat is still installed after purge")
	}
	if moatRunning() {
		t.Error("a moat process from the package is running")
	}
}
