package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// TestQuarantineTodaySendmail runs the README's Sendmail hold-queue commands: a message moat quarantines is
// listed by `mailq -qQ` with moat's reason, released with `sendmail -Q -qQ -qIID`, and delivered with
// `sendmail -qIID`.
func TestQuarantineTodaySendmail(t *testing.T) {
	dir := stack.TempDir(t, "moat-quarantine")
	sock := filepath.Join(dir, "moat.sock")
	conf := filepath.Join(dir, "moat.toml")
	body := fmt.Sprintf("[milter]\nlisten = [\"unix:%s\"]\nsocket_mode = \"0666\"\n[checks.test]\nquarantine_to = [\"ok@example.test\"]\n", sock)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	stack.StartMoat(t, conf, "unix:"+sock)
	sm := stack.StartSendmail(t, stack.SendmailOptions{Milter: "local:" + sock, LocalDomains: []string{"example.test"}})
	readme, err := os.ReadFile(filepath.Join(stack.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"mailq -qQ", "sendmail -Q -qQ -qIQUEUEID", "sendmail -qIQUEUEID"} {
		if !strings.Contains(string(readme), cmd) {
			t.Fatalf("README lacks %q", cmd)
		}
	}
	if r := stack.SendMail(t, sm.Addr, "client.example.net", "alice@example.org", []string{"ok@example.test"}, message("held", "hello")); !r.OK() {
		t.Fatalf("send: %v", r)
	}
	bin := filepath.Join(stack.SendmailRoot(), "usr/libexec/sendmail/sendmail")
	// In a private UTS namespace with the daemon's fully qualified host name, as the stack runs Sendmail:
	// otherwise each command waits a minute trying to canonify the machine's short name.
	run := func(args ...string) string {
		script := fmt.Sprintf("hostname %s && exec %s -C %s %s", stack.SendmailHostname, bin, sm.CF, strings.Join(args, " "))
		out, err := exec.Command("unshare", "-u", "sh", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("sendmail %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var list string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		list = run("-bp", "-qQ") // mailq -qQ
		if strings.Contains(list, "moat: test/") || time.Now().After(deadline) {
			break
		}
	}
	m := regexp.MustCompile(`(?m)^(\w{10,})\*?\s`).FindStringSubmatch(list)
	if m == nil || !strings.Contains(list, "moat: test/") {
		t.Fatalf("mailq -qQ does not list the held message with moat's reason:\n%s", list)
	}
	id := m[1]
	run("-Q", "-qQ", "-qI"+id)
	if after := run("-bp", "-qQ"); strings.Contains(after, id) {
		t.Fatalf("still quarantined after release:\n%s", after)
	}
	run("-qI" + id)
	if msgs := sm.WaitMessages(t, "ok@example.test", 1, 30*time.Second); len(msgs) != 1 {
		t.Fatalf("%d delivered", len(msgs))
	}
}

// TestQuarantineTodayPostfix runs the README's Postfix hold-queue commands: a message moat quarantines is
// listed by `postqueue -p` with "!", the mail log says milter-hold and moat's line for that queue id gives the
// reason, `postsuper -H` releases it
// and `postqueue -i` delivers it.
func TestQuarantineTodayPostfix(t *testing.T) {
	dir := stack.TempDir(t, "moat-quarantine")
	sock := filepath.Join(dir, "moat.sock")
	conf := filepath.Join(dir, "moat.toml")
	body := fmt.Sprintf("[milter]\nlisten = [\"unix:%s\"]\nsocket_mode = \"0666\"\n[checks.test]\nquarantine_to = [\"ok@example.test\"]\n", sock)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	m := stack.StartMoat(t, conf, "unix:"+sock)
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + sock, Mailboxes: mailboxes})
	readme, err := os.ReadFile(filepath.Join(stack.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"postqueue -p", "milter-hold", "postsuper -H QUEUEID", "postqueue -i QUEUEID", "postsuper -d QUEUEID"} {
		if !strings.Contains(string(readme), cmd) {
			t.Fatalf("README lacks %q", cmd)
		}
	}
	if r := stack.SendMail(t, pf.Addr, "client.example.net", "alice@example.org", []string{"ok@example.test"}, message("held", "hello")); !r.OK() {
		t.Fatalf("send: %v", r)
	}
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, append([]string{"-c", pf.ConfDir}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	var id string
	for deadline := time.Now().Add(10 * time.Second); id == "" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if m := regexp.MustCompile(`(?m)^([0-9A-F]{6,})!`).FindStringSubmatch(run("postqueue", "-p")); m != nil {
			id = m[1]
		}
	}
	if id == "" {
		t.Fatalf("postqueue -p lists no held message:\n%s", run("postqueue", "-p"))
	}
	if log := pf.Log(); !strings.Contains(log, id+": milter-hold") {
		t.Errorf("the mail log lacks milter-hold for %s:\n%s", id, log)
	}
	if log := m.WaitLog(t, "queue_id="+id, 10*time.Second); !regexp.MustCompile(`queue_id=` + id + ` .*action=quarantine reason=test/`).MatchString(log) {
		t.Errorf("moat's log line for queue id %s lacks the quarantine and its reason:\n%s", id, log)
	}
	run("postsuper", "-H", id)
	run("postqueue", "-i", id)
	if msgs := pf.WaitMessages(t, "ok@example.test", 1, 30*time.Second); len(msgs) != 1 {
		t.Fatalf("%d delivered", len(msgs))
	}
}
