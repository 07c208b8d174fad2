package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/web"
)

// TestPasswd: moat passwd --stdin writes an entry moat can read, replaces it on a second run, and refuses
// a terminal-less standard input without --stdin.
func TestPasswd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "web.passwd")
	old := stdin
	t.Cleanup(func() { stdin = old })
	for _, pw := range []string{"first-pw", "second-pw"} {
		stdin = strings.NewReader(pw + "\n")
		var out, errb bytes.Buffer
		if code := run([]string{"passwd", "-f", file, "--stdin", "admin"}, &out, &errb); code != 0 {
			t.Fatalf("passwd: exit %d: %s", code, errb.String())
		}
	}
	users, err := web.ReadPasswords(file)
	if err != nil || len(users) != 1 || users["admin"] == nil {
		t.Fatalf("password file: %v, %v; want one entry for admin", users, err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	stdin = strings.NewReader("x\n")
	var out, errb bytes.Buffer
	if code := run([]string{"passwd", "-f", file, "admin"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "--stdin") {
		t.Errorf("without a terminal: exit %d, %q; want 1 naming --stdin", code, errb.String())
	}
	if code := run([]string{"passwd", "-f", file, "bad:name"}, &out, &errb); code != 2 {
		t.Errorf("a name with a colon: exit %d, want 2", code)
	}
}

// TestCheckConfigWeb: check-config reports a bad [web] table at its file, line and key.
func TestCheckConfigWeb(t *testing.T) {
	cfg := writeConfig(t, "[web]\nlisten = \"192.0.2.1:9358\"\npasswords = \"missing.passwd\"\n")
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-c", cfg}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "moat.toml:2: web.listen: ") {
		t.Errorf("non-loopback listen without TLS: exit %d, %q; want the error at moat.toml:2: web.listen", code, errb.String())
	}
	cfg = writeConfig(t, "[web]\npasswords = \"missing.passwd\"\n")
	if code := run([]string{"check-config", "-c", cfg}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "moat.toml:2: web.passwords: ") {
		t.Errorf("missing password file: exit %d, %q", code, errb.String())
	}
}
