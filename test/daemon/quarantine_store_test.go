package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// With [quarantine] mode store, Postfix accepts the quarantined message (250) and keeps nothing: no queue
// file, no delivery; moat's quarantine lists it with its ref and recipient. When the store cannot take a
// message (the quarantine is full), the client gets 451 4.3.0 with the ref, and Postfix keeps nothing either.
func TestQuarantineStorePostfix(t *testing.T) {
	dir := stack.TempDir(t, "moat-quarantine-store")
	sock := filepath.Join(dir, "moat.sock")
	conf := filepath.Join(dir, "moat.toml")
	body := fmt.Sprintf("[milter]\nlisten = [\"unix:%s\"]\nsocket_mode = \"0666\"\n[checks.test]\nquarantine_to = [\"ok@example.test\"]\n"+
		"[store]\npath = \"moat.db\"\n[quarantine]\nmode = \"store\"\nmax_size = \"300\"\n", sock)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	m := stack.StartMoat(t, conf, "unix:"+sock)
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + sock, Mailboxes: mailboxes})
	if r := stack.SendMail(t, pf.Addr, "client.example.net", "alice@example.org", []string{"ok@example.test"}, message("held", "hello")); !r.OK() {
		t.Fatalf("send: %v", r)
	}
	var recs []struct {
		ID         string
		Sender     string
		Recipients []struct{ Addr, State string }
	}
	for deadline := time.Now().Add(10 * time.Second); len(recs) == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, err := exec.Command(stack.BuildMoat(t), "quarantine", "-c", conf, "list", "--json").Output()
		if err != nil {
			t.Fatalf("moat quarantine list: %v", err)
		}
		if err := json.Unmarshal(out, &recs); err != nil {
			t.Fatalf("list --json: %v\n%s", err, out)
		}
	}
	if len(recs) != 1 || recs[0].Sender != "alice@example.org" || recs[0].Recipients[0].Addr != "ok@example.test" ||
		recs[0].Recipients[0].State != "held" {
		t.Fatalf("quarantine list: %+v", recs)
	}
	m.WaitLog(t, "ref="+recs[0].ID, 10*time.Second)
	if out, _ := exec.Command("postqueue", "-c", pf.ConfDir, "-p").CombinedOutput(); !strings.Contains(string(out), "Mail queue is empty") {
		t.Fatalf("Postfix kept the message:\n%s", out)
	}
	time.Sleep(time.Second)
	if entries, _ := os.ReadDir(filepath.Join(pf.Maildir("ok@example.test"), "new")); len(entries) != 0 {
		t.Fatalf("%d messages delivered", len(entries))
	}

	// The store cannot take the next one (max_size, 300 bytes, would be passed): 451 4.3.0 with the ref, nothing
	// kept. (A read-only database cannot be had here: the tests run as root.)
	r := stack.SendMail(t, pf.Addr, "client.example.net", "alice@example.org", []string{"ok@example.test"}, message("held 2", "hello"))
	if r.OK() || !strings.Contains(r.String(), "451") || !strings.Contains(r.String(), "4.3.0") || !strings.Contains(r.String(), "ref=") {
		t.Fatalf("send with the quarantine full: %v, want 451 4.3.0 with the ref", r)
	}
	if out, _ := exec.Command("postqueue", "-c", pf.ConfDir, "-p").CombinedOutput(); !strings.Contains(string(out), "Mail queue is empty") {
		t.Fatalf("Postfix kept the refused message:\n%s", out)
	}
}
