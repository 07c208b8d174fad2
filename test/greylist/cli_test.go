package greylist_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/test/stack"
)

type scanOut struct {
	Action     string `json:"action"`
	Recipients []struct {
		Address  string `json:"address"`
		Action   string `json:"action"`
		SMTPCode int    `json:"smtp_code"`
		SMTPText string `json:"smtp_text"`
	} `json:"recipients"`
	Checks []struct {
		Name   string `json:"name"`
		Reason string `json:"reason"`
	} `json:"checks"`
}

// TestScanAndCommand drives the built binary: `moat scan` reports the greylist verdict without changing the
// stored state (unless -update-state), and `moat greylist list|show|release|purge` works on the same
// database.
func TestScanAndCommand(t *testing.T) {
	bin := stack.BuildMoat(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "moat.toml")
	os.WriteFile(conf, []byte("[milter]\nlisten = [\"unix:"+dir+"/m.sock\"]\n[store]\npath = \""+dir+"/moat.db\"\n[checks.greylist]\n"), 0o644)
	msg := filepath.Join(dir, "m.eml")
	os.WriteFile(msg, stack.Message("alice@sender.example", "bob@moat.test", "scan", "hi"), 0o644)

	moat := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String() + errb.String(), code
	}
	scan := func(extra ...string) scanOut {
		t.Helper()
		args := append([]string{"scan", "-c", conf, "-ip", "192.0.2.5", "-helo", "mx.sender.example",
			"-from", "alice@sender.example", "-rcpt", "bob@moat.test"}, extra...)
		out, _ := moat(append(args, msg)...)
		var r scanOut
		if err := json.Unmarshal([]byte(out[:strings.LastIndexByte(out, '}')+1]), &r); err != nil {
			t.Fatalf("scan output: %v\n%s", err, out)
		}
		return r
	}
	entries := func() int {
		t.Helper()
		out, code := moat("greylist", "-c", conf, "list")
		if code != 0 {
			t.Fatalf("greylist list: exit %d\n%s", code, out)
		}
		return strings.Count(out, "\n") - 1
	}

	for i := 0; i < 2; i++ {
		r := scan()
		if len(r.Recipients) != 1 || r.Recipients[0].SMTPCode != 451 || !strings.Contains(r.Recipients[0].SMTPText, "4.7.1 Greylisted") {
			t.Fatalf("read-only scan %d: %+v", i, r)
		}
	}
	if n := entries(); n != 0 {
		t.Fatalf("read-only scans stored %d entries", n)
	}
	if r := scan("-update-state"); len(r.Recipients) != 1 || r.Recipients[0].SMTPCode != 451 {
		t.Fatalf("scan -update-state: %+v", r)
	}
	if n := entries(); n != 1 {
		t.Fatalf("%d entries after scan -update-state, want 1", n)
	}
	out, _ := moat("greylist", "-c", conf, "list", "-state", "pending", "-json")
	var e struct{ ID, Client, Sender, Rcpt, State string }
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.Client != "192.0.2.0/24" || e.Sender != "alice@sender.example" ||
		e.Rcpt != "bob@moat.test" || e.State != "pending" {
		t.Fatalf("list -json: %v %+v\n%s", err, e, out)
	}
	if out, code := moat("greylist", "-c", conf, "show", e.ID[:6]); code != 0 || !strings.Contains(out, "state:      pending") {
		t.Fatalf("show: exit %d\n%s", code, out)
	}
	if out, code := moat("greylist", "-c", conf, "release", e.ID); code != 0 || !strings.Contains(out, "released "+e.ID) {
		t.Fatalf("release: exit %d\n%s", code, out)
	}
	// Released: the next attempt passes (the read-only scan sees it without recording the pass).
	r := scan()
	if len(r.Recipients) != 1 || r.Recipients[0].SMTPCode >= 400 {
		t.Fatalf("scan after release: %+v", r)
	}
	if out, code := moat("greylist", "-c", conf, "purge"); code != 0 || out != "purged 0 expired entries\n" {
		t.Fatalf("purge: exit %d %q", code, out)
	}
	if out, code := moat("greylist", "-c", conf, "nonsense"); code != 2 || !strings.Contains(out, "usage: moat greylist") {
		t.Fatalf("bad subcommand: exit %d\n%s", code, out)
	}
}
