package stack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SendmailOptions configures StartSendmail.
type SendmailOptions struct {
	// Milter is the milter to use: "inet:PORT@127.0.0.1", "unix:/path",
	// "local:/path" or a bare "/path" (a unix socket, which must not be in a
	// world-writable directory such as /tmp: use TempDir). The Postfix
	// spelling "inet:127.0.0.1:PORT" is accepted too. "" means none.
	Milter string
	// LocalDomains are the domains Sendmail accepts mail for (class w).
	LocalDomains []string
	// MilterFlags overrides the filter's F= flag ("T" = tempfail when the
	// milter is unavailable); "" keeps "T".
	MilterFlags string
	// MilterTimeouts overrides T=; "" keeps "C:10s;S:10s;R:10s;E:30s".
	MilterTimeouts string
}

// Sendmail is a running private Sendmail MTA. Every accepted recipient
// (local or relayed) is delivered by a tiny mailer into a Maildir-like
// directory per address (Dir/mail/ADDR/new), so nothing leaves the machine.
type Sendmail struct {
	Addr string // "127.0.0.1:port"
	Dir  string
	CF   string // the generated sendmail.cf
	p    *proc
}

// SendmailRoot is where .ci/run extracts sendmail-bin, sendmail-base and
// sendmail-cf; MOAT_SENDMAIL_ROOT overrides it.
func SendmailRoot() string {
	if r := os.Getenv("MOAT_SENDMAIL_ROOT"); r != "" {
		return r
	}
	return "/opt/moat-sendmail"
}

// SendmailHostname is the fully qualified host name Sendmail runs with (in a
// private UTS namespace).
const SendmailHostname = "sendmail.moat.test"

// SendmailMilterSpec converts a milter address to Sendmail's S= form.
func SendmailMilterSpec(m string) string {
	switch {
	case strings.HasPrefix(m, "/"):
		return "unix:" + m
	case strings.HasPrefix(m, "inet:") && !strings.Contains(m, "@"):
		hp := strings.TrimPrefix(m, "inet:")
		if i := strings.LastIndexByte(hp, ':'); i >= 0 {
			return "inet:" + hp[i+1:] + "@" + hp[:i]
		}
	}
	return m
}

// StartSendmail builds a sendmail.cf with m4 from the extracted sendmail-cf
// and runs `sendmail -bD` in a private UTS namespace whose host name is
// fully qualified. It is ready when the daemon greets with 220.
func StartSendmail(t testing.TB, opts SendmailOptions) *Sendmail {
	t.Helper()
	needRoot(t, "Sendmail")
	root := SendmailRoot()
	bin := filepath.Join(root, "usr/libexec/sendmail/sendmail")
	cfdir := filepath.Join(root, "usr/share/sendmail/cf")
	Need(t, "m4", "unshare", "hostname", bin)
	if _, err := os.Stat(filepath.Join(cfdir, "m4/cf.m4")); err != nil {
		if InCI() {
			t.Fatalf("stack: sendmail-cf missing (CI=true): %v", err)
		}
		t.Skipf("stack: sendmail-cf not extracted: %v", err)
	}
	m4, _ := lookBin("m4")
	unshare, _ := lookBin("unshare")
	hostname, _ := lookBin("hostname")

	dir := TempDir(t, "sendmail")
	s := &Sendmail{Dir: dir, CF: filepath.Join(dir, "sendmail.cf")}
	queue := filepath.Join(dir, "queue")
	mail := filepath.Join(dir, "mail")
	if err := os.Mkdir(queue, 0o700); err != nil {
		t.Fatalf("stack: %v", err)
	}
	if err := os.Mkdir(mail, 0o755); err != nil {
		t.Fatalf("stack: %v", err)
	}
	deliver := filepath.Join(dir, "deliver")
	writeFile(t, deliver, sendmailDeliver, 0o755)
	writeFile(t, filepath.Join(dir, "service.switch"), "hosts files\naliases files\n", 0o644)
	writeFile(t, filepath.Join(dir, "hosts"), "127.0.0.1 localhost "+SendmailHostname+"\n", 0o644)

	port := FreePort(t)
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	q := func(s string) string { return "`" + s + "'" }
	var mc strings.Builder
	mc.WriteString("divert(0)dnl\nVERSIONID(`moat test stack')dnl\nOSTYPE(`linux')dnl\n")
	defs := [][2]string{
		{"confDOMAIN_NAME", SendmailHostname},
		{"QUEUE_DIR", queue},
		{"confPID_FILE", filepath.Join(dir, "sendmail.pid")},
		{"ALIAS_FILE", ""},
		{"confHELP_FILE", ""},
		{"confSTATUS_FILE", ""},
		{"confSERVICE_SWITCH_FILE", filepath.Join(dir, "service.switch")},
		{"confHOSTS_FILE", filepath.Join(dir, "hosts")},
		{"confDONT_PROBE_INTERFACES", "True"},
		{"confBIND_OPTS", "-DNSRCH -DEFNAMES"},
		{"confTO_IDENT", "0"},
		{"confREFUSE_LA", "1000"},
		{"confQUEUE_LA", "1000"},
		{"confDELAY_LA", "0"},
		{"confMIN_FREE_BLOCKS", "0"},
		{"confCONNECTION_RATE_THROTTLE", "0"},
		{"confMAX_DAEMON_CHILDREN", "0"},
		{"confLOG_LEVEL", "9"},
		{"confMILTER_LOG_LEVEL", "6"},
		// Trust sticky directories such as /tmp above a private socket dir.
		{"confDONT_BLAME_SENDMAIL", "TrustStickyBit"},
	}
	for _, d := range defs {
		fmt.Fprintf(&mc, "define(%s, %s)dnl\n", q(d[0]), q(d[1]))
	}
	for _, f := range []string{"no_default_msa", "nocanonify", "accept_unresolvable_domains", "accept_unqualified_senders"} {
		fmt.Fprintf(&mc, "FEATURE(%s)dnl\n", q(f))
	}
	fmt.Fprintf(&mc, "DAEMON_OPTIONS(%s)dnl\n", q(fmt.Sprintf("Port=%d, Addr=127.0.0.1, Name=MTA", port)))
	for _, d := range opts.LocalDomains {
		fmt.Fprintf(&mc, "LOCAL_DOMAIN(%s)dnl\n", q(strings.ToLower(d)))
	}
	if opts.Milter != "" {
		flags, tos := opts.MilterFlags, opts.MilterTimeouts
		if flags == "" {
			flags = "T"
		}
		if tos == "" {
			tos = "C:10s;S:10s;R:10s;E:30s"
		}
		fmt.Fprintf(&mc, "INPUT_MAIL_FILTER(`moat', `S=%s, F=%s, T=%s')dnl\n", SendmailMilterSpec(opts.Milter), flags, tos)
	}
	mc.WriteString("MAILER(`smtp')dnl\n")
	fmt.Fprintf(&mc, "MAILER_DEFINITIONS\nMmoatbox, P=%s, F=lsDFMPSnqu9, S=EnvFromSMTP/HdrFromSMTP, R=EnvToSMTP/HdrToSMTP, T=DNS/RFC822/SMTP, A=deliver %s $u\n\n", deliver, mail)
	// Every recipient that passes the checks is delivered into mail/ADDR.
	mc.WriteString("LOCAL_RULE_0\nR$+ < @ $+ . > $*\t$#moatbox $@ $2 $: $1 < @ $2 . >\n")
	mcFile := filepath.Join(dir, "sendmail.mc")
	writeFile(t, mcFile, mc.String(), 0o644)
	cmd := exec.Command(m4, "-D_CF_DIR_="+cfdir+"/", filepath.Join(cfdir, "m4/cf.m4"), mcFile)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stack: m4 sendmail.mc: %v\n%s", err, mc.String())
	}
	writeFile(t, s.CF, string(out), 0o644)

	// A private UTS namespace gives Sendmail a fully qualified host name, so
	// it does not wait a minute trying to canonify the machine's short name.
	script := fmt.Sprintf("%s %s && exec %s -C %s -bD -q10s -O LogLevel=9 -X %s", hostname, SendmailHostname, bin, s.CF, filepath.Join(dir, "trace.log"))
	c := exec.Command(unshare, "-u", "sh", "-c", script)
	c.Dir = dir
	s.p = startProc(t, "sendmail", c, filepath.Join(dir, "trace.log"))
	t.Cleanup(s.Stop)
	s.p.waitReady(t, 20*time.Second, exchange("tcp", s.Addr, nil, "220 "))
	return s
}

// Stop stops Sendmail (safe to call twice).
func (s *Sendmail) Stop() { s.p.stop(syscall.SIGTERM, 5*time.Second) }

// Log returns Sendmail's SMTP trace (every command and reply of every
// session, from -X) followed by what it wrote to stdout/stderr; there is no
// syslog on the machine, so nothing else is logged.
func (s *Sendmail) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "trace.log"))
	return string(b) + s.p.out.String()
}

// Maildir returns the delivery directory of an address (messages are in new/).
func (s *Sendmail) Maildir(addr string) string {
	return filepath.Join(s.Dir, "mail", strings.ReplaceAll(strings.ToLower(addr), "/", "_"))
}

// WaitMessages waits until addr has at least n delivered messages and
// returns them (oldest first); it fails the test on timeout.
func (s *Sendmail) WaitMessages(t testing.TB, addr string, n int, timeout time.Duration) [][]byte {
	t.Helper()
	msgs, err := waitFiles(filepath.Join(s.Maildir(addr), "new"), n, timeout)
	if err != nil {
		ents, _ := os.ReadDir(filepath.Join(s.Dir, "mail"))
		var have []string
		for _, e := range ents {
			have = append(have, e.Name())
		}
		qents, _ := os.ReadDir(filepath.Join(s.Dir, "queue"))
		t.Fatalf("stack: sendmail: %s: %v (mailboxes: %v; %d files in queue)\n--- output (tail) ---\n%s",
			addr, err, have, len(qents), tail(s.Log(), 30))
	}
	return msgs
}

// sendmailDeliver is the local mailer: deliver BASEDIR ADDRESS < message.
const sendmailDeliver = `#!/bin/sh
umask 022
rcpt=$(printf '%s' "$2" | tr 'A-Z/' 'a-z_')
d="$1/$rcpt"
mkdir -p "$d/tmp" "$d/new" || exit 73
f="$(date +%s%N).$$"
cat > "$d/tmp/$f" || exit 74
mv "$d/tmp/$f" "$d/new/$f" || exit 74
exit 0
`
