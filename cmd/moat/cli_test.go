package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/dkim"
	"github.com/moatmail/moat/test/stack"
)

// inDir runs the test in dir as the working directory.
func inDir(t *testing.T, dir string) {
	t.Helper()
	old, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chdir(old) })
}

func TestHelpOnStdoutWithoutConfig(t *testing.T) {
	inDir(t, t.TempDir()) // no moat.toml here
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		for _, want := range []string{"moat serve [-c FILE]", "moat check-config [-c FILE]", "--exit-code",
			"moat greylist [-c FILE] list", "moat greylist [-c FILE] show ID", "moat greylist [-c FILE] release ID",
			"moat greylist [-c FILE] purge", "moat learn [-c FILE]", "spam|ham|forget", "moat dkim keygen",
			"moat version", "/etc/moat/moat.toml"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v: usage lacks %q:\n%s", args, want, out.String())
			}
		}
		if errb.Len() != 0 {
			t.Errorf("%v: wrote to stderr: %s", args, errb.String())
		}
	}
	for _, name := range []string{"serve", "check-config", "scan", "greylist", "learn", "dkim", "version"} {
		for _, args := range [][]string{{name, "--help"}, {name, "-h"}, {"help", name}} {
			var out, errb bytes.Buffer
			if code := run(args, &out, &errb); code != 0 {
				t.Errorf("%v: exit %d: %s", args, code, errb.String())
			}
			if !strings.HasPrefix(out.String(), "usage: moat "+name) {
				t.Errorf("%v: stdout is not the usage: %q", args, out.String())
			}
		}
	}
	// Help after a subcommand, as an administrator types it.
	var out, errb bytes.Buffer
	if code := run([]string{"greylist", "list", "--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "release  lets a pending entry pass") {
		t.Errorf("greylist list --help: exit %d: %s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"scan", "--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "-exit-code") || !strings.Contains(out.String(), "-update-state") {
		t.Errorf("scan --help lacks its flags: %s", out.String())
	}
	out.Reset()
	if code := run([]string{"--version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "moat ") {
		t.Errorf("--version: exit %d: %q", code, out.String())
	}
	// No arguments at all is a usage error, on stderr.
	out.Reset()
	errb.Reset()
	if code := run(nil, &out, &errb); code != 2 || out.Len() != 0 || !strings.Contains(errb.String(), "usage: moat") {
		t.Errorf("no arguments: exit %d, stdout %q", code, out.String())
	}
}

func TestBadCommandLines(t *testing.T) {
	cfg := writeConfig(t, scanConfig)
	for _, args := range [][]string{
		{"check-config", "-c", cfg, "extra-arg"},
		{"check-config", "--frobnicate"},
		{"serve", "-c", cfg, "extra-arg"},
		{"serve", "--no-such-flag"},
		{"version", "extra"},
		{"scan", "-c", cfg, "--no-such-flag"},
		{"scan", "-c", cfg, "a.eml", "b.eml"},
		{"dkim", "keygen", "example.com"},
		{"dkim", "rotate"},
		{"dkim", "keygen", "example.com", "../sel"},
		{"learn", "-c", cfg, "spam"},
		{"help", "frobnicate"},
		{"frobnicate"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, errb.String())
		}
		if errb.Len() == 0 {
			t.Errorf("%v: no error message", args)
		}
	}
}

func TestDefaultConfigPath(t *testing.T) {
	if _, err := os.Stat(defaultConfigPaths[0]); err == nil {
		t.Skipf("%s exists on this machine; it would be used first", defaultConfigPaths[0])
	}
	dir := t.TempDir()
	inDir(t, dir)
	var out, errb bytes.Buffer
	for _, cmd := range []string{"check-config", "serve"} {
		errb.Reset()
		if code := run([]string{cmd}, &out, &errb); code != 1 {
			t.Fatalf("%s without a configuration: exit %d", cmd, code)
		}
		if !strings.Contains(errb.String(), "/etc/moat/moat.toml") || !strings.Contains(errb.String(), "./moat.toml") {
			t.Errorf("%s: the error must name both places: %s", cmd, errb.String())
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "moat.toml"), []byte(scanConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"check-config"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "moat.toml: ok") {
		t.Errorf("./moat.toml not used: exit %d: %s%s", code, out.String(), errb.String())
	}
}

func TestCheckConfigReportsEveryError(t *testing.T) {
	cfg := writeConfig(t, `[log]
level = "loud"
[policy]
tag_score = -1
[milter]
listen = ["bogus"]
[checks.nosuch]
[checks.test]
frobnicate = 1
reject_to = "not-a-list"
[nosuchtable]
`)
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-c", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"moat.toml:2: log.level:",
		"moat.toml:4: policy.tag_score:",
		"moat.toml:6: milter.listen[0]:",
		"moat.toml:7: checks.nosuch: unknown check",
		"moat.toml:9: checks.test.frobnicate: unknown key",
		"moat.toml:10: checks.test.reject_to:",
		"moat.toml:11: nosuchtable: unknown table",
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("errors lack %q:\n%s", want, errb.String())
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(errb.String()), "\n") {
		if !regexp.MustCompile(`^moat: \S+moat\.toml:\d+: \S+: `).MatchString(line) {
			t.Errorf("line without file:line:key: %q", line)
		}
	}
}

func TestScanExitCode(t *testing.T) {
	cfg := writeConfig(t, scanConfig+"quarantine_to = [\"held@example.test\"]\n")
	msgPath := filepath.Join(t.TempDir(), "m.eml")
	if err := os.WriteFile(msgPath, []byte(plainMessage), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		rcpt   string
		action string
		code   int
	}{
		{"ok@example.test", "accept", 0},
		{"bad@example.test", "reject", 1},
		{"held@example.test", "quarantine", 3},
	} {
		var out, errb bytes.Buffer
		code := run([]string{"scan", "-c", cfg, "--exit-code", "--rcpt", tt.rcpt, msgPath}, &out, &errb)
		var rep scanReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("%s: not JSON (%v): %s", tt.rcpt, err, out.String())
		}
		if code != tt.code || rep.Action != tt.action {
			t.Errorf("%s: exit %d action %s, want %d %s (%s)", tt.rcpt, code, rep.Action, tt.code, tt.action, errb.String())
		}
		// Without --exit-code the status says only whether the scan ran.
		out.Reset()
		if code := run([]string{"scan", "-c", cfg, "--rcpt", tt.rcpt, msgPath}, &out, &errb); code != 0 {
			t.Errorf("%s without --exit-code: exit %d", tt.rcpt, code)
		}
	}
	cfgTemp := writeConfig(t, scanConfig+"tempfail_to = [\"later@example.test\"]\n")
	var out, errb bytes.Buffer
	if code := run([]string{"scan", "-c", cfgTemp, "--exit-code", "--rcpt", "later@example.test", msgPath}, &out, &errb); code != 2 {
		t.Errorf("tempfail: exit %d: %s", code, out.String())
	}
	// A scan that could not run must not look like a verdict.
	if code := run([]string{"scan", "-c", cfg, "--exit-code", filepath.Join(t.TempDir(), "missing.eml")}, &out, &errb); code != 4 {
		t.Errorf("missing message: exit %d, want 4", code)
	}
	for action, code := range map[string]int{"accept": 0, "reject": 1, "tempfail": 2, "quarantine": 3, "discard": 3} {
		if got := actionExitCode(action); got != code {
			t.Errorf("actionExitCode(%s) = %d, want %d", action, got, code)
		}
	}
}

func TestDKIMKeygenWritesPrivateFile(t *testing.T) {
	dir := t.TempDir()
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	for _, typ := range []string{"rsa", "ed25519"} {
		keyPath := filepath.Join(dir, typ+".pem")
		var out, errb bytes.Buffer
		if code := run([]string{"dkim", "keygen", "--type", typ, "--out", keyPath, "example.com", "sel1"}, &out, &errb); code != 0 {
			t.Fatalf("%s: exit %d: %s", typ, code, errb.String())
		}
		if strings.Contains(out.String(), "PRIVATE KEY") || !strings.Contains(out.String(), "sel1._domainkey.example.com. 3600 IN TXT") {
			t.Errorf("%s: stdout must be the DNS record only:\n%s", typ, out.String())
		}
		st, err := os.Stat(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file mode %04o, want 0600 (umask 0)", typ, st.Mode().Perm())
		}
		if _, err := dkim.LoadKey(keyPath); err != nil {
			t.Errorf("%s: the key file does not load: %v", typ, err)
		}
		before, _ := os.ReadFile(keyPath)
		out.Reset()
		errb.Reset()
		if code := run([]string{"dkim", "keygen", "--type", typ, "--out", keyPath, "example.com", "sel1"}, &out, &errb); code != 1 {
			t.Errorf("%s: overwrote an existing key file: exit %d", typ, code)
		}
		if after, _ := os.ReadFile(keyPath); !bytes.Equal(before, after) {
			t.Errorf("%s: the existing key changed", typ)
		}
		if !strings.Contains(errb.String(), "file exists") {
			t.Errorf("%s: error %q", typ, errb.String())
		}
	}
	// Without --out the key goes to DOMAIN.SELECTOR.pem in the working directory.
	inDir(t, dir)
	var out, errb bytes.Buffer
	if code := run([]string{"dkim", "keygen", "example.org", "s2"}, &out, &errb); code != 0 {
		t.Fatalf("default file: exit %d: %s", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "example.org.s2.pem")); err != nil {
		t.Error(err)
	}
}

func TestCheckConfigWarnsAboutReadableKey(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "k.pem")
	var rec bytes.Buffer
	if err := dkim.KeygenFile(keyPath, &rec, "example.com", "s1", "ed25519"); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "moat.toml")
	body := "[milter]\nlisten = [\"unix:moat.sock\"]\n[checks.dkimsign]\n[[checks.dkimsign.keys]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey_file = \"k.pem\"\n"
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-c", cfg}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if strings.Contains(errb.String(), "warning") {
		t.Errorf("a 0600 key is warned about: %s", errb.String())
	}
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code := run([]string{"check-config", "-c", cfg}, &out, &errb); code != 0 {
		t.Fatalf("a warning is not an error: exit %d", code)
	}
	if !strings.Contains(errb.String(), "moat.toml:7: checks.dkimsign.keys[0].key_file:") || !strings.Contains(errb.String(), "readable by every user") {
		t.Errorf("no warning about a world-readable key: %q", errb.String())
	}
}

// serveConfig is a configuration for `moat serve` on a free TCP port, logging to logPath.
func serveConfig(t *testing.T, dir, logPath, extraMilter string) (cfg, addr string) {
	addr = fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t))
	body := fmt.Sprintf("[milter]\nlisten = [\"tcp:%s\"]\n%s\n[log]\nfile = %q\n[checks.test]\nreject_to = [\"bad@example.test\"]\n", addr, extraMilter, logPath)
	cfg = filepath.Join(dir, "moat.toml")
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, addr
}

func waitForFile(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never contained %q:\n%s", path, want, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSIGHUPReopensLogFile(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "moat.log")
	cfg, addr := serveConfig(t, dir, logPath, "")
	m := stack.StartMoat(t, cfg, addr)
	waitForFile(t, logPath, "moat started")
	// logrotate without copytruncate: move the file away, then SIGHUP.
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	fresh := waitForFile(t, logPath, "configuration reloaded")
	if strings.Contains(fresh, "moat started") {
		t.Errorf("the new file has the old lines:\n%s", fresh)
	}
	if old, _ := os.ReadFile(rotated); strings.Contains(string(old), "configuration reloaded") {
		t.Errorf("the reload was logged into the rotated file:\n%s", old)
	}
}

func TestServeDropsPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dropping privileges needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	// The directory must be reachable by nobody: moat writes its log there after the drop.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "moat.log")
	cfg, addr := serveConfig(t, dir, logPath, "user = \"nobody\"")
	m := stack.StartMoat(t, cfg, addr)
	log := waitForFile(t, logPath, "moat started")
	if !strings.Contains(log, "user=nobody:") {
		t.Errorf("start-up line does not say who moat runs as:\n%s", log)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	uidLine := regexp.MustCompile(`(?m)^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)`).FindStringSubmatch(string(status))
	if uidLine == nil {
		t.Fatalf("no Uid in /proc status:\n%s", status)
	}
	for _, id := range uidLine[1:] {
		if id != nobody.Uid {
			t.Errorf("uids %v, want all %s (nobody)", uidLine[1:], nobody.Uid)
		}
	}
	gidLine := regexp.MustCompile(`(?m)^Gid:\s+(\d+)`).FindStringSubmatch(string(status))
	if gidLine == nil || gidLine[1] != nobody.Gid {
		t.Errorf("gid %v, want %s", gidLine, nobody.Gid)
	}
	if strings.Contains(log, "running as root") {
		t.Errorf("warned about root although privileges were dropped:\n%s", log)
	}

	// Started as root without a user: a warning.
	dir2 := t.TempDir()
	logPath2 := filepath.Join(dir2, "moat.log")
	cfg2, addr2 := serveConfig(t, dir2, logPath2, "")
	stack.StartMoat(t, cfg2, addr2)
	log2 := waitForFile(t, logPath2, "moat started")
	if !strings.Contains(log2, "running as root") || !strings.Contains(log2, "user=root") {
		t.Errorf("no warning about running as root:\n%s", log2)
	}
}
