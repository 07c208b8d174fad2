package audit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func moatAudit(t *testing.T, dir, toml string) *Report {
	t.Helper()
	a := &auditor{rep: &Report{}, opts: Options{Config: mustConfig(t, dir, toml)}}
	a.checkMoatConfig()
	return a.rep
}

func TestMoatConfigPoints(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "recipients"), []byte("# nobody yet\n\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "white"), []byte("friend@example.org\n"), 0o644)
	rep := moatAudit(t, dir, `
[checks.tlsauth]
[checks.recipients]
addresses_file = "recipients"
[checks.greylist]
dry_run = true
[checks.rdns]
enabled = false
[checks.barring]
recipients = ["*!*"]
[checks.senderlists]
whitelist_file = "white"
[checks.clamd]
[checks.relay]
local_domains = ["example.org"]
[checks.spf]
[checks.dkim]
[checks.dmarc]
dry_run = true
[checks.dnsbl]
`)
	mustLevel(t, rep, "moat", "tlsauth", Pass, "point 1")
	mustLevel(t, rep, "moat", "recipients", Pass, "point 2")
	mustLevel(t, rep, "moat", "recipients-lists", Warn, "addresses is empty") // the file holds only a comment
	mustLevel(t, rep, "moat", "greylist", Warn, "point 3", "dry run")
	mustLevel(t, rep, "moat", "rdns", Warn, "point 4", "enabled = false")
	mustLevel(t, rep, "moat", "barring", Pass, "point 5")
	mustLevel(t, rep, "moat", "barring-lists", Warn, "senders is empty")
	mustLevel(t, rep, "moat", "senderlists-lists", Warn, "blacklist is empty")
	for _, f := range rep.Find("moat", "senderlists-lists") {
		if strings.Contains(f.Detail, "whitelist") {
			t.Errorf("a filled whitelist file reported empty: %s", f.Detail)
		}
	}
	mustLevel(t, rep, "moat", "clamd", Pass, "point 7")
	mustLevel(t, rep, "moat", "spamd", Warn, "point 8", "not configured")
	mustLevel(t, rep, "moat", "learning", Warn, "point 9", "no spamd")
	mustLevel(t, rep, "moat", "relay", Pass, "point 10")
	mustLevel(t, rep, "moat", "relay-lists", Warn, "trusted_networks is empty")
	mustLevel(t, rep, "moat", "spf", Pass, "point 11")
	mustLevel(t, rep, "moat", "dkim", Pass, "point 11")
	mustLevel(t, rep, "moat", "dkimsign", Warn, "point 11", "not configured")
	mustLevel(t, rep, "moat", "dmarc", Warn, "point 11", "dry run")
	mustLevel(t, rep, "moat", "dnsbl", Pass, "point 12")
	mustLevel(t, rep, "moat", "dnsbl-lists", Warn, "no lists")
	if rep.Failed() {
		t.Errorf("a valid configuration failed:\n%s", dump(rep))
	}
}

func TestMoatConfigGlobalDryRunAndLearning(t *testing.T) {
	dir := t.TempDir()
	rep := moatAudit(t, dir, "[policy]\ndry_run = true\n[checks.spamd]\n")
	mustLevel(t, rep, "moat", "dry_run", Warn, "[policy] dry_run = true")
	mustLevel(t, rep, "moat", "spamd", Warn, "dry run")
	mustLevel(t, rep, "moat", "learning", Pass, "--allow-tell")

	rep = moatAudit(t, dir, "[checks.spamd]\nuser_per_domain = true\n")
	mustLevel(t, rep, "moat", "learning", Warn, "-rcpt-domain")

	rep = moatAudit(t, dir, "[checks.recipients]\naddresses_file = \"missing\"\n")
	mustLevel(t, rep, "moat", "recipients-lists", Fail, "missing")
}

func TestMoatConfigErrorAndNone(t *testing.T) {
	a := &auditor{rep: &Report{}, opts: Options{ConfigErr: errors.New("moat.toml:3: checks.relay.local_domain: unknown key")}}
	a.checkMoatConfig()
	mustLevel(t, a.rep, "moat", "config", Fail, "unknown key")

	a = &auditor{rep: &Report{}}
	a.checkMoatConfig()
	mustLevel(t, a.rep, "moat", "config", Warn, "no file given")
}
