package stack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PostfixOptions configures a private Postfix instance.
type PostfixOptions struct {
	// Milter is the value for smtpd_milters, e.g. "unix:/path/moat.sock" or
	// "inet:127.0.0.1:PORT"; "" means none.
	Milter string
	// Domains are the virtual_mailbox_domains.
	Domains []string
	// Mailboxes are addresses that get a Maildir each (virtual_mailbox_maps).
	// Their domains are added to Domains.
	Mailboxes []string
	// Discard delivers everything to discard: (for benchmarks).
	Discard bool
	// RelayAll sets mynetworks=127.0.0.0/8 and permits relaying, so that moat
	// decides relay in tests. Mail for non-local domains is always discarded
	// (default_transport = discard:), never sent off the machine.
	RelayAll bool
	// ExtraMain holds main.cf settings that override the harness's own.
	ExtraMain map[string]string
	// Submission adds a second smtpd service on its own port (SubmissionAddr), as port 587 is in
	// production: SMTP AUTH offered and required (StartSASLAuth's stand-in as the SASL backend, PLAIN with
	// SASLPassword), relaying for authenticated clients only. The main smtpd offers no AUTH.
	Submission bool
}

// Postfix is a running private Postfix instance.
type Postfix struct {
	Addr string // "127.0.0.1:port" of smtpd
	// SubmissionAddr is "127.0.0.1:port" of the submission service (PostfixOptions.Submission), else "".
	SubmissionAddr string
	Dir            string // root of the instance
	ConfDir        string // config_directory (main.cf, master.cf)
	QueueDir       string
	MailDir        string // virtual_mailbox_base
	LogFile        string // maillog_file

	port int
	p    *proc
}

// virtual(8) delivers as this uid/gid (nobody:nogroup).
const postfixMailUID, postfixMailGID = 65534, 65534

// StartPostfix creates and starts a private Postfix instance listening on
// 127.0.0.1:<free port>. It is ready when smtpd sends its banner.
func StartPostfix(t testing.TB, opts PostfixOptions) *Postfix {
	t.Helper()
	needRoot(t, "Postfix")
	Need(t, "postfix", "postconf", "/usr/lib/postfix/sbin/master")
	uid, gid := lookupUser(t, "postfix")
	_, _ = uid, gid
	dir := TempDir(t, "postfix")
	pf := &Postfix{
		Dir:      dir,
		ConfDir:  filepath.Join(dir, "etc"),
		QueueDir: filepath.Join(dir, "spool"),
		MailDir:  filepath.Join(dir, "mail"),
		LogFile:  filepath.Join(dir, "maillog"),
		port:     FreePort(t),
	}
	pf.Addr = fmt.Sprintf("127.0.0.1:%d", pf.port)
	for _, d := range []string{pf.ConfDir, pf.QueueDir, pf.MailDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("stack: %v", err)
		}
	}
	if err := os.Chown(pf.MailDir, postfixMailUID, postfixMailGID); err != nil {
		t.Fatalf("stack: %v", err)
	}
	pf.writeConfig(t, opts)
	master := fmt.Sprintf(postfixMasterCF, pf.port)
	if opts.Submission {
		port := FreePort(t)
		pf.SubmissionAddr = fmt.Sprintf("127.0.0.1:%d", port)
		master += fmt.Sprintf(postfixSubmissionCF, port, StartSASLAuth(t))
	}
	writeFile(t, filepath.Join(pf.ConfDir, "master.cf"), master, 0o644)
	backdate(t, filepath.Join(pf.ConfDir, "master.cf"))

	// Create the queue and data directories with their owners.
	postfixBin, _ := lookBin("postfix")
	if out, err := exec.Command(postfixBin, "-c", pf.ConfDir, "check").CombinedOutput(); err != nil {
		t.Fatalf("stack: postfix check: %v\n%s", err, out)
	}
	masterBin, _ := lookBin("/usr/lib/postfix/sbin/master")
	cmd := exec.Command(masterBin, "-c", pf.ConfDir, "-d")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MAIL_CONFIG="+pf.ConfDir)
	pf.p = startProc(t, "postfix master", cmd, pf.LogFile)
	t.Cleanup(pf.stop)
	pf.p.waitReady(t, 15*time.Second, exchange("tcp", pf.Addr, nil, "220 "))
	if pf.SubmissionAddr != "" {
		pf.p.waitReady(t, 15*time.Second, exchange("tcp", pf.SubmissionAddr, nil, "220 "))
	}
	return pf
}

func (pf *Postfix) stop() {
	if pf.p.exited() {
		return
	}
	// SIGTERM to the master (and its group) is what `postfix stop` does.
	pf.p.stop(syscall.SIGTERM, 5*time.Second)
}

// Stop stops the instance (also done at cleanup).
func (pf *Postfix) Stop() { pf.stop() }

func (pf *Postfix) writeConfig(t testing.TB, opts PostfixOptions) {
	t.Helper()
	domains := map[string]bool{}
	for _, d := range opts.Domains {
		domains[strings.ToLower(d)] = true
	}
	var vmap strings.Builder
	for _, m := range opts.Mailboxes {
		m = strings.ToLower(m)
		if i := strings.LastIndexByte(m, '@'); i >= 0 {
			domains[m[i+1:]] = true
		}
		fmt.Fprintf(&vmap, "%s %s/\n", m, m)
	}
	var dl []string
	for d := range domains {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	vmapFile := filepath.Join(pf.ConfDir, "vmailbox")
	writeFile(t, vmapFile, vmap.String(), 0o644)
	backdate(t, vmapFile)

	m := map[string]string{
		"compatibility_level":      "3.6",
		"queue_directory":          pf.QueueDir,
		"data_directory":           filepath.Join(pf.Dir, "data"),
		"command_directory":        "/usr/sbin",
		"daemon_directory":         "/usr/lib/postfix/sbin",
		"shlib_directory":          "/usr/lib/postfix",
		"meta_directory":           "/etc/postfix",
		"mail_owner":               "postfix",
		"setgid_group":             "postdrop",
		"myhostname":               "mail.moat.test",
		"mydomain":                 "moat.test",
		"myorigin":                 "$myhostname",
		"mydestination":            "",
		"local_recipient_maps":     "",
		"alias_maps":               "",
		"alias_database":           "",
		"inet_interfaces":          "127.0.0.1",
		"inet_protocols":           "ipv4",
		"maillog_file":             pf.LogFile,
		"maillog_file_prefixes":    pf.Dir,
		"smtpd_peername_lookup":    "no",
		"smtp_dns_support_level":   "disabled",
		"smtpd_banner":             "$myhostname ESMTP moat-test-postfix",
		"biff":                     "no",
		"append_dot_mydomain":      "no",
		"readme_directory":         "no",
		"html_directory":           "no",
		"smtpd_tls_security_level": "none",
		"smtp_tls_security_level":  "none",
		"smtpd_error_sleep_time":   "0",
		"smtpd_soft_error_limit":   "100",
		"smtpd_hard_error_limit":   "200",
		"in_flow_delay":            "0",
		"delay_warning_time":       "0",
		"queue_run_delay":          "10s",
		"minimal_backoff_time":     "10s",
		"maximal_backoff_time":     "60s",
		"default_process_limit":    "100",
		"virtual_mailbox_domains":  strings.Join(dl, ", "),
		"virtual_mailbox_base":     pf.MailDir,
		"virtual_mailbox_maps":     "texthash:" + vmapFile,
		"virtual_uid_maps":         fmt.Sprintf("static:%d", postfixMailUID),
		"virtual_gid_maps":         fmt.Sprintf("static:%d", postfixMailGID),
		"virtual_minimum_uid":      "100",
		"virtual_transport":        "virtual",
		// Mail for other domains never leaves the machine.
		"default_transport": "discard:relay disabled in tests",
		"relay_transport":   "discard:relay disabled in tests",
		"local_transport":   "discard:local delivery disabled in tests",
		"mynetworks":        "127.0.0.1/32",
		// Without RelayAll: no relaying at all, even from loopback.
		"smtpd_relay_restrictions": "reject_unauth_destination",
	}
	if len(dl) == 0 {
		m["virtual_mailbox_maps"] = ""
	}
	if opts.RelayAll {
		m["mynetworks"] = "127.0.0.0/8"
		m["smtpd_relay_restrictions"] = "permit_mynetworks, reject_unauth_destination"
	}
	if opts.Discard {
		m["virtual_transport"] = "discard:discard for tests"
		m["default_transport"] = "discard:discard for tests"
	}
	if opts.Milter != "" {
		m["smtpd_milters"] = opts.Milter
		m["milter_protocol"] = "6"
		m["milter_default_action"] = "tempfail"
		m["milter_connect_timeout"] = "10s"
		m["milter_command_timeout"] = "30s"
		m["milter_content_timeout"] = "60s"
	}
	for k, v := range opts.ExtraMain {
		m[k] = v
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, m[k])
	}
	mainCF := filepath.Join(pf.ConfDir, "main.cf")
	writeFile(t, mainCF, b.String(), 0o644)
	backdate(t, mainCF)
}

// backdate sets a file's mtime 10 s into the past so that Postfix uses a
// freshly written file at once instead of waiting for it to settle.
func backdate(t testing.TB, path string) {
	t.Helper()
	old := time.Now().Add(-10 * time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatalf("stack: %v", err)
	}
}

// Maildir returns the path of the Maildir of a mailbox address.
func (pf *Postfix) Maildir(addr string) string {
	return filepath.Join(pf.MailDir, strings.ToLower(addr))
}

// Log returns the content of the mail log.
func (pf *Postfix) Log() string {
	b, _ := os.ReadFile(pf.LogFile)
	return string(b)
}

// WaitMessages waits until the Maildir of addr holds at least n messages in
// new/ and returns them (oldest first). It fails the test on timeout, showing
// the tail of the mail log.
func (pf *Postfix) WaitMessages(t testing.TB, addr string, n int, timeout time.Duration) [][]byte {
	t.Helper()
	dir := filepath.Join(pf.Maildir(addr), "new")
	msgs, err := waitFiles(dir, n, timeout)
	if err != nil {
		t.Fatalf("stack: postfix: %s: %v\n--- maillog (tail) ---\n%s", addr, err, readTail(pf.LogFile, 40))
	}
	return msgs
}

// Reload rewrites main.cf (and the mailbox map) from opts, backdates them and
// runs `postfix reload`, then waits until the master has reloaded and idle
// smtpd processes had time to go.
func (pf *Postfix) Reload(t testing.TB, opts PostfixOptions) {
	t.Helper()
	before := strings.Count(pf.Log(), "reload -- version")
	pf.writeConfig(t, opts)
	bin, _ := lookBin("postfix")
	if out, err := exec.Command(bin, "-c", pf.ConfDir, "reload").CombinedOutput(); err != nil {
		t.Fatalf("stack: postfix reload: %v\n%s\n%s", err, out, readTail(pf.LogFile, 30))
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(pf.Log(), "reload -- version") <= before {
		if time.Now().After(deadline) {
			t.Fatalf("stack: postfix did not log its reload\n%s", readTail(pf.LogFile, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(PostfixReloadSettle)
}

// waitFiles waits until dir holds at least n regular files and returns the
// contents of all of them, sorted by name.
func waitFiles(dir string, n int, timeout time.Duration) ([][]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			if e.Type().IsRegular() {
				names = append(names, e.Name())
			}
		}
		if len(names) >= n {
			sort.Strings(names)
			var out [][]byte
			for _, nm := range names {
				b, err := os.ReadFile(filepath.Join(dir, nm))
				if err != nil {
					return nil, err
				}
				out = append(out, b)
			}
			return out, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d messages in %s after %v", len(names), n, dir, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const postfixMasterCF = `# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:%d inet n     -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// postfixSubmissionCF is the submission service: its port, then the address of the SASL stand-in.
const postfixSubmissionCF = `127.0.0.1:%d inet n     -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:%s
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
`

// PostfixReloadSettle is how long Reload waits after Postfix logged its
// reload, for idle smtpd processes with the old settings to go away.
var PostfixReloadSettle = 500 * time.Millisecond
