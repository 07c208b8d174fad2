package greylist_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// greyEntries lists the store's entries with `moat greylist list -json`.
func greyEntries(t *testing.T, bin, conf string) []map[string]any {
	t.Helper()
	out, code := runMoat(t, bin, filepath.Dir(conf), "greylist", "-c", conf, "list", "-json")
	if code != 0 {
		t.Fatalf("moat greylist list: exit %d: %s", code, out)
	}
	var list []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("greylist list line %q: %v", line, err)
		}
		list = append(list, e)
	}
	return list
}

// TestPassRecordedOnlyForAcceptedMail: through Postfix, a retry that passes greylisting at RCPT but is refused
// at end of message (here by the scripted test check, as a virus or spam would be) leaves the triplet pending
// and counts nothing towards auto-whitelisting; the next retry, accepted, passes it.
func TestPassRecordedOnlyForAcceptedMail(t *testing.T) {
	stack.Need(t, "postfix")
	bin := stack.BuildMoat(t)
	dir := stack.TempDir(t, "greylist-accepted")
	sock := filepath.Join(dir, "moat.sock")
	conf := filepath.Join(dir, "moat.toml")
	body := fmt.Sprintf(`[milter]
listen = ["unix:%s"]
socket_mode = "0666"

[store]
path = %q

[checks.greylist]
delay = "%s"
auto_whitelist = 1
auto_whitelist_interval = "0s"

[checks.test]
reject_body = "REFUSE-THIS-BODY"
`, sock, filepath.Join(dir, "moat.db"), delay)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	m := stack.StartMoat(t, conf, "unix:"+sock)
	pf := stack.StartPostfix(t, stack.PostfixOptions{Milter: "unix:" + sock, Mailboxes: []string{mailbox}})
	from := "alice@sender.example"
	sendBody := func(text string) stack.SMTPResult {
		return stack.SendMail(t, pf.Addr, "mx.sender.example", from, []string{mailbox}, stack.Message(from, mailbox, "greylist", text))
	}
	wantGreylisted(t, sendBody("hello"))
	time.Sleep(delay + 500*time.Millisecond)

	r := sendBody("REFUSE-THIS-BODY")
	if r.OK() || r.Stage != "DATA" || r.Code != 550 {
		t.Fatalf("the refused retry: %v", r)
	}
	list := greyEntries(t, bin, conf)
	if len(list) != 1 || list[0]["state"] != "pending" {
		t.Fatalf("after a message refused at end of message the triplet must stay pending: %v\n%s", list, m.Log())
	}
	out, _ := runMoat(t, bin, dir, "greylist", "-c", conf, "show", list[0]["id"].(string))
	if !strings.Contains(out, "client-passes: 0 of 1") {
		t.Errorf("the refused message counted towards auto-whitelisting:\n%s", out)
	}

	if r := sendBody("hello again"); !r.OK() {
		t.Fatalf("the accepted retry: %v\n%s", r, m.Log())
	}
	list = greyEntries(t, bin, conf)
	if len(list) != 1 || list[0]["state"] != "passed" {
		t.Fatalf("after an accepted message the triplet must have passed: %v", list)
	}
	out, _ = runMoat(t, bin, dir, "greylist", "-c", conf, "show", list[0]["id"].(string))
	if !strings.Contains(out, "client-passes: 1 of 1") {
		t.Errorf("the accepted message did not count towards auto-whitelisting:\n%s", out)
	}
	msgs := pf.WaitMessages(t, mailbox, 1, 30*time.Second)
	if len(msgs) != 1 || !strings.Contains(string(msgs[0]), "hello again") {
		t.Fatalf("delivered: %d messages", len(msgs))
	}
}
