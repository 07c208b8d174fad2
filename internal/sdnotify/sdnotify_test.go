package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifyPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	if err := Notify(Ready); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, c); got != "READY=1" {
		t.Errorf("got %q, want READY=1", got)
	}
	if err := Notify(Reloading()); err != nil {
		t.Fatal(err)
	}
	got := receive(t, c)
	if !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") || len(got) <= len("RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("got %q, want RELOADING=1 and MONOTONIC_USEC", got)
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := "@moat-sdnotify-test-" + filepath.Base(t.TempDir())
	c := listen(t, "\x00"+name[1:])
	t.Setenv("NOTIFY_SOCKET", name)
	if err := Notify(Stopping); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, c); got != "STOPPING=1" {
		t.Errorf("got %q, want STOPPING=1", got)
	}
}

func TestNotifyOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify(Ready); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nil", err)
	}
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if err := Notify(Ready); err == nil {
		t.Error("a relative NOTIFY_SOCKET was accepted")
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if err := Notify(Ready); err == nil {
		t.Error("a socket nobody listens on gave no error")
	}
}
