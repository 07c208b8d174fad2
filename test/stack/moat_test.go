package stack

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartMoatWithFake(t *testing.T) {
	dir := TempDir(t, "fakemoat")
	bin := filepath.Join(dir, "fakemoat")
	out, err := exec.Command("go", "build", "-o", bin, "./testdata/fakemoat").CombinedOutput()
	if err != nil {
		t.Fatalf("build fakemoat: %v\n%s", err, out)
	}
	t.Setenv("MOAT_BIN", bin)
	sock := filepath.Join(dir, "m.sock")
	tcp := "127.0.0.1:" + itoa(FreePort(t))
	conf := filepath.Join(dir, "moat.conf")
	writeFile(t, conf, "unix:"+sock+"\ntcp:"+tcp+"\n", 0o644)
	m := StartMoat(t, conf, "unix:"+sock, "tcp:"+tcp)
	if !strings.Contains(m.Log(), "listening on tcp:"+tcp) {
		t.Fatalf("log: %q", m.Log())
	}
	m.Stop()
	if err := m.Wait(t, time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, m.Log())
	}
	if !strings.Contains(m.Log(), "bye") {
		t.Fatalf("no graceful stop: %q", m.Log())
	}
}

func TestBuildMoat(t *testing.T) {
	bin := BuildMoat(t)
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("moat version: %v\n%s", err, out)
	}
	t.Logf("moat version: %s", strings.TrimSpace(string(out)))
}
