// Package audit_test runs `moat audit` (the built binary) against real components on 127.0.0.1: unbound
// serving test zones with deliberately broken records, a private Postfix set up as the checklist asks and
// one set up badly (open relay, an expired certificate, VRFY on, no milter), a private Sendmail's
// sendmail.cf, a running moat, and MTA-STS policies over HTTPS with a test CA. Nothing leaves the machine:
// every MX is reached through --connect, and the MX addresses in the zones (192.0.2.0/24) are DNS data only.
package audit_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/dkim"
	"github.com/moatmail/moat/test/stack"
)

// finding and report are the JSON output of moat audit --json.
type finding struct {
	Section, Check, Level, Detail, Fix string
}

type report struct {
	Domain   string
	Failed   bool
	Pass     int
	Warn     int
	Fail     int
	Findings []finding
}

func (r report) String() string {
	var b strings.Builder
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%s %s/%s: %s\n", f.Level, f.Section, f.Check, f.Detail)
	}
	return b.String()
}

// must asserts a finding of section and check at level whose detail holds every part.
func (r report) must(t *testing.T, section, check, level string, parts ...string) {
	t.Helper()
	for _, f := range r.Findings {
		if f.Section != section || f.Check != check || f.Level != level {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(f.Detail, p)
		}
		if ok {
			return
		}
	}
	t.Errorf("%s: no %s %s/%s finding containing %q; findings:\n%s", r.Domain, level, section, check, parts, r)
}

// mustNot asserts that no finding of section and check is at level.
func (r report) mustNot(t *testing.T, section, check, level string) {
	t.Helper()
	for _, f := range r.Findings {
		if f.Section == section && f.Check == check && f.Level == level {
			t.Errorf("%s: unexpected %s %s/%s: %s", r.Domain, level, section, check, f.Detail)
		}
	}
}

// certs is a test CA and the PEM files it issued.
type certs struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

func newCA(t *testing.T, dir string) *certs {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "moat audit e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	ca := &certs{cert: c, key: key, dir: dir}
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", der, 0o644)
	return ca
}

func writePEM(t *testing.T, path, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
}

// issue writes NAME.key and NAME.crt for the host names; expired makes a certificate that ended yesterday.
// It returns the two paths and the pair for Go servers.
func (ca *certs) issue(t *testing.T, file string, expired bool, names ...string) (string, string, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nb, na := time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if expired {
		nb, na = time.Now().Add(-96*time.Hour), time.Now().Add(-24*time.Hour)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, crtPath := filepath.Join(ca.dir, file+".key"), filepath.Join(ca.dir, file+".crt")
	writePEM(t, keyPath, "PRIVATE KEY", kder, 0o600)
	writePEM(t, crtPath, "CERTIFICATE", der, 0o644)
	return keyPath, crtPath, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// stsServer serves an MTA-STS policy over HTTPS on 127.0.0.1 and returns its URL.
func stsServer(t *testing.T, cert tls.Certificate, policy string) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, policy)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the expired certificate's refused handshakes
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL + "/.well-known/mta-sts.txt"
}

// dkimKey writes an Ed25519 key file and returns its DNS record.
func dkimKey(t *testing.T, path string) string {
	t.Helper()
	var b bytes.Buffer
	if err := dkim.Keygen(&b, "key.test", "s", "ed25519"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := dkim.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := dkim.TXTRecord(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// enableTLS adds the tlsmgr service (smtpd's TLS entropy and session cache; without it smtpd turns TLS off)
// to the harness's master.cf and reloads Postfix.
func enableTLS(t *testing.T, pf *stack.Postfix) {
	t.Helper()
	master := filepath.Join(pf.ConfDir, "master.cf")
	f, err := os.OpenFile(master, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-10 * time.Second) // Postfix waits for a file changed within the last second
	os.Chtimes(master, old, old)
	before := strings.Count(pf.Log(), "reload -- version")
	if out, err := exec.Command(stack.Bin(t, "postfix"), "-c", pf.ConfDir, "reload").CombinedOutput(); err != nil {
		t.Fatalf("postfix reload: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(pf.Log(), "reload -- version") <= before {
		if time.Now().After(deadline) {
			t.Fatalf("postfix did not reload:\n%s", pf.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(stack.PostfixReloadSettle)
}

// runAudit runs `moat audit --json --dns DNS ARGS...` and returns the report and the exit status. The DNS
// server is always given: without it (and without [dns] in the configuration) the audit would ask the
// machine's resolver, off the box.
func runAudit(t *testing.T, bin, dns string, args ...string) (report, int) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"audit", "--json", "--dns", dns, "--timeout", "90s", "--step-timeout", "5s"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("moat audit %v: exit %d, output not JSON: %v\n%s\n%s", args, code, err, out.String(), errb.String())
	}
	return r, code
}

// mustNoMessage asserts that no message went through Postfix's cleanup (it logs message-id= for each): the
// audit stops every attempt at the RCPT reply and never sends DATA.
func mustNoMessage(t *testing.T, maillog string) {
	t.Helper()
	if strings.Contains(maillog, "message-id=") || strings.Contains(maillog, "status=sent") {
		t.Errorf("a message went through Postfix; the audit must never send DATA:\n%s", maillog)
	}
}

func TestAudit(t *testing.T) {
	bin := stack.BuildMoat(t)
	dir := stack.TempDir(t, "audit")
	ca := newCA(t, dir)

	// DKIM: good.test publishes its key; bad.test publishes another key than the one moat signs with.
	goodRec := dkimKey(t, filepath.Join(dir, "good.dkim.pem"))
	dkimKey(t, filepath.Join(dir, "bad.dkim.pem"))
	otherRec := dkimKey(t, filepath.Join(dir, "other.dkim.pem"))

	records := []string{
		// good.test: everything as the checklist asks.
		"good.test. 300 IN MX 10 mail.good.test.",
		"mail.good.test. 300 IN A 192.0.2.10",
		"10.2.0.192.in-addr.arpa. 300 IN PTR mail.good.test.",
		`good.test. 300 IN TXT "v=spf1 mx -all"`,
		stack.TXTRecord("s1._domainkey.good.test", goodRec),
		`_dmarc.good.test. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@good.test"`,
		`_mta-sts.good.test. 300 IN TXT "v=STSv1; id=20261204"`,
		`_smtp._tls.good.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tls@good.test"`,
		// bad.test: two SPF records, a PTR that does not confirm, a DKIM key that does not match, p=none.
		"bad.test. 300 IN MX 10 mx.bad.test.",
		"mx.bad.test. 300 IN A 192.0.2.20",
		"20.2.0.192.in-addr.arpa. 300 IN PTR other.bad.test.",
		"other.bad.test. 300 IN A 192.0.2.99",
		`bad.test. 300 IN TXT "v=spf1 mx -all"`,
		`bad.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 ~all"`,
		stack.TXTRecord("s1._domainkey.bad.test", otherRec),
		`_dmarc.bad.test. 300 IN TXT "v=DMARC1; p=none"`,
		`_mta-sts.bad.test. 300 IN TXT "v=STSv1; id=1"`,
	}
	// lookups.test: 11 DNS-querying terms.
	var inc []string
	for i := 0; i < 10; i++ {
		records = append(records, fmt.Sprintf(`i%d.lookups.test. 300 IN TXT "v=spf1 ip4:192.0.2.%d -all"`, i, 100+i))
		inc = append(inc, fmt.Sprintf("include:i%d.lookups.test", i))
	}
	records = append(records, "lookups.test. 300 IN MX 10 mail.good.test.",
		`lookups.test. 300 IN TXT "v=spf1 `+strings.Join(inc, " ")+` mx -all"`)
	dns := stack.StartDNS(t, records)

	// moat itself, as the good Postfix's milter: its [milter] listen is what the audit looks for in
	// smtpd_milters and sendmail.cf.
	milterPort := stack.FreePort(t)
	listen := fmt.Sprintf("tcp:127.0.0.1:%d", milterPort)
	goodConf := filepath.Join(dir, "good.toml")
	os.WriteFile(goodConf, []byte(fmt.Sprintf(`[milter]
listen = [%q]
[dns]
servers = [%q]
timeout = "1s"
retries = 0
[store]
path = "moat.db"
[checks.tlsauth]
[checks.relay]
local_domains = ["good.test"]
trusted_networks = ["192.0.2.0/24"]
[checks.recipients]
addresses = ["postmaster@good.test"]
[checks.barring]
senders = ["*@*%%%%%%%%*"]
recipients = ["*!*"]
[checks.senderlists]
whitelist = ["friend@partner.test"]
blacklist = [".spammer.test"]
[checks.dnsbl]
[[checks.dnsbl.lists]]
zone = "bl.test"
[checks.rdns]
[checks.spf]
[checks.greylist]
[checks.dkim]
[checks.dmarc]
[checks.clamd]
servers = ["tcp:127.0.0.1:1"]
[checks.spamd]
servers = ["tcp:127.0.0.1:1"]
[checks.dkimsign]
[[checks.dkimsign.keys]]
domain = "good.test"
selector = "s1"
key_file = "good.dkim.pem"
`, listen, dns.Addr)), 0o644)
	// The bad configuration: dry run, empty lists, points off, a DKIM key that is not the published one.
	badConf := filepath.Join(dir, "bad.toml")
	os.WriteFile(badConf, []byte(fmt.Sprintf(`[milter]
listen = ["tcp:127.0.0.1:%d"]
[policy]
dry_run = true
[checks.relay]
local_domains = ["bad.test"]
trusted_networks = []
[checks.rdns]
enabled = false
[checks.dkimsign]
[[checks.dkimsign.keys]]
domain = "bad.test"
selector = "s1"
key_file = "bad.dkim.pem"
`, stack.FreePort(t))), 0o644)
	moat := stack.StartMoat(t, goodConf, listen)
	_ = moat

	goodKey, goodCrt, _ := ca.issue(t, "mail.good.test", false, "mail.good.test")
	goodPF := stack.StartPostfix(t, stack.PostfixOptions{
		Milter:    "inet:127.0.0.1:" + fmt.Sprint(milterPort),
		Mailboxes: []string{"postmaster@good.test"},
		ExtraMain: map[string]string{
			"myhostname":               "mail.good.test",
			"smtpd_tls_security_level": "may",
			"smtpd_tls_chain_files":    goodKey + ", " + goodCrt,
			"smtpd_tls_auth_only":      "yes",
			"disable_vrfy_command":     "yes",
			"message_size_limit":       "52428800",
			"smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
		},
	})
	badKey, badCrt, _ := ca.issue(t, "mx.bad.test", true, "mx.bad.test")
	badPF := stack.StartPostfix(t, stack.PostfixOptions{
		Mailboxes: []string{"postmaster@bad.test"},
		ExtraMain: map[string]string{
			"smtpd_tls_security_level": "may",
			"smtpd_tls_chain_files":    badKey + ", " + badCrt,
			// An open relay: everyone is in mynetworks. Mail for elsewhere is discarded by the harness, and the
			// audit never sends DATA anyway.
			"mynetworks":               "0.0.0.0/0",
			"smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
			"milter_default_action":    "accept",
			"smtpd_tls_auth_only":      "no",
			"disable_vrfy_command":     "no",
			"message_size_limit":       "0",
		},
	})

	enableTLS(t, goodPF)
	enableTLS(t, badPF)

	_, _, goodSTS := ca.issue(t, "sts-good", false, "mta-sts.good.test")
	_, _, badSTS := ca.issue(t, "sts-bad", true, "mta-sts.bad.test")
	goodURL := stsServer(t, goodSTS, "version: STSv1\nmode: enforce\nmx: mail.good.test\nmax_age: 604800\n")
	badURL := stsServer(t, badSTS, "version: STSv1\nmode: enforce\nmx: mx.bad.test\nmax_age: 604800\n")
	caFile := filepath.Join(dir, "ca.pem")

	t.Run("good", func(t *testing.T) {
		r, code := runAudit(t, bin, dns.Addr, "-c", goodConf, "--connect", goodPF.Addr, "--ca-file", caFile, "--mta-sts-url", goodURL,
			"--postconf-dir", goodPF.ConfDir, "good.test")
		if code != 0 || r.Failed || r.Fail != 0 {
			t.Errorf("good setup: exit %d, %d FAIL; want exit 0 and none:\n%s", code, r.Fail, r)
		}
		r.must(t, "dns", "mx", "PASS", "10 mail.good.test")
		r.must(t, "dns", "ptr", "PASS", "192.0.2.10: PTR mail.good.test, forward-confirmed")
		r.must(t, "dns", "ptr-banner", "PASS", "mail.good.test")
		r.must(t, "dns", "dnssec", "WARN", "not signed/validated") // unbound's local data carries no signatures
		r.must(t, "spf", "record", "PASS")
		r.must(t, "spf", "mx-pass", "PASS", "192.0.2.10")
		r.must(t, "dkim", "key", "PASS", "s1._domainkey.good.test: published and matches")
		r.must(t, "dmarc", "policy", "PASS", "p=reject")
		r.must(t, "mta-sts", "mode", "PASS", "enforce")
		r.must(t, "mta-sts", "mx", "PASS", "mail.good.test")
		r.must(t, "tls-rpt", "record", "PASS")
		sec := "smtp mail.good.test"
		r.must(t, sec, "greeting", "PASS", "mail.good.test")
		r.must(t, sec, "starttls", "PASS")
		r.must(t, sec, "tls-version", "PASS", "TLS 1.")
		r.must(t, sec, "certificate", "PASS", "valid for mail.good.test")
		r.must(t, sec, "relay", "PASS", "relay forms refused")
		r.must(t, sec, "vrfy", "PASS", "502")
		r.must(t, "postfix", "smtpd_milters", "PASS", listen[len("tcp:"):])
		r.must(t, "postfix", "milter_default_action", "PASS")
		r.must(t, "postfix", "relay", "PASS", "reject_unauth_destination")
		r.must(t, "postfix", "smtpd_tls_auth_only", "PASS")
		r.must(t, "postfix", "disable_vrfy_command", "PASS")
		r.must(t, "postfix", "message_size_limit", "PASS")
		for _, c := range []string{"tlsauth", "recipients", "greylist", "rdns", "barring", "senderlists", "clamd", "spamd",
			"learning", "relay", "spf", "dkim", "dkimsign", "dmarc", "dnsbl"} {
			r.must(t, "moat", c, "PASS", "point ")
		}
		mustNoMessage(t, goodPF.Log())
	})

	t.Run("bad", func(t *testing.T) {
		r, code := runAudit(t, bin, dns.Addr, "-c", badConf, "--connect", badPF.Addr, "--ca-file", caFile, "--mta-sts-url", badURL,
			"--postconf-dir", badPF.ConfDir, "bad.test")
		if code != 1 || !r.Failed {
			t.Errorf("bad setup: exit %d, failed %v; want exit 1:\n%s", code, r.Failed, r)
		}
		r.must(t, "spf", "record", "FAIL", "2 SPF records")
		r.must(t, "dns", "ptr", "FAIL", "192.0.2.20", "not forward-confirmed")
		r.must(t, "dkim", "key", "FAIL", "s1._domainkey.bad.test: the published key does not match")
		r.must(t, "dmarc", "policy", "WARN", "p=none")
		r.must(t, "dmarc", "rua", "WARN", "no rua")
		r.must(t, "mta-sts", "policy", "FAIL", "expired")
		r.must(t, "tls-rpt", "record", "WARN", "no TLS-RPT")
		sec := "smtp mx.bad.test"
		r.must(t, sec, "greeting", "PASS")
		r.must(t, sec, "starttls", "PASS")
		r.must(t, sec, "certificate", "FAIL", "expired on")
		r.must(t, sec, "relay", "FAIL", "open relay", "plain relay")
		r.must(t, "postfix", "smtpd_milters", "FAIL", "empty")
		r.must(t, "postfix", "milter_default_action", "FAIL", "accept")
		r.must(t, "postfix", "mynetworks", "FAIL", "0.0.0.0/0")
		r.must(t, "postfix", "smtpd_tls_auth_only", "FAIL")
		r.must(t, "postfix", "disable_vrfy_command", "WARN")
		r.must(t, "postfix", "message_size_limit", "FAIL", "no limit")
		r.must(t, "moat", "dry_run", "WARN", "[policy] dry_run = true")
		r.must(t, "moat", "relay", "WARN", "dry run")
		r.must(t, "moat", "relay-lists", "WARN", "trusted_networks is empty")
		r.must(t, "moat", "recipients", "WARN", "not configured")
		r.mustNot(t, "moat", "config", "FAIL") // a valid file, only a weak one
		r.must(t, "moat", "rdns", "WARN", "enabled = false")
		r.must(t, "moat", "clamd", "WARN", "not configured")
		mustNoMessage(t, badPF.Log())
		if !strings.Contains(badPF.Log(), "RCPT") && !strings.Contains(badPF.Log(), "client=localhost") && !strings.Contains(badPF.Log(), "client=unknown") {
			t.Logf("mail log:\n%s", badPF.Log())
		}
	})

	t.Run("lookups", func(t *testing.T) {
		r, code := runAudit(t, bin, dns.Addr, "--skip-smtp", "--skip-mta", "lookups.test")
		r.must(t, "spf", "lookups", "FAIL", "11 counted")
		r.mustNot(t, "spf", "record", "FAIL")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
	})

	t.Run("sendmail", func(t *testing.T) {
		sm := stack.StartSendmail(t, stack.SendmailOptions{Milter: "inet:127.0.0.1:" + fmt.Sprint(milterPort), LocalDomains: []string{"good.test"}})
		r, _ := runAudit(t, bin, dns.Addr, "-c", goodConf, "--skip-smtp", "--sendmail-cf", sm.CF, "good.test")
		r.must(t, "sendmail", "milter", "PASS", "Xmoat", "InputMailFilters")
		r.must(t, "sendmail", "F=T", "PASS")
		r.must(t, "sendmail", "PrivacyOptions", "WARN", "authwarnings") // the m4 default lets VRFY and EXPN through
		r.must(t, "sendmail", "MaxMessageSize", "FAIL", "no limit")

		r, _ = runAudit(t, bin, dns.Addr, "-c", badConf, "--skip-smtp", "--sendmail-cf", sm.CF, "good.test")
		r.must(t, "sendmail", "milter", "FAIL", "no milter")
	})

	t.Run("usage", func(t *testing.T) {
		out, err := exec.Command(bin, "audit").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("moat audit without a domain: %v, want exit 2\n%s", err, out)
		}
		out, err = exec.Command(bin, "audit", "--dns", dns.Addr, "not a domain").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "not a mail domain") {
			t.Errorf("moat audit with a bad domain: %v, want exit 2\n%s", err, out)
		}
		// The table for people: every finding on one line, the fix under it, the count at the end.
		tbl, _ := exec.Command(bin, "audit", "--dns", dns.Addr, "--skip-smtp", "--skip-mta", "good.test").Output()
		if !bytes.Contains(tbl, []byte("moat audit of good.test")) || !bytes.Contains(tbl, []byte("PASS  spf")) ||
			!bytes.Contains(tbl, []byte(" fail\n")) {
			t.Errorf("table output:\n%s", tbl)
		}
	})
}
