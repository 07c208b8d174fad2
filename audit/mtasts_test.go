package audit

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/resolver/dnstest"
)

func TestParseSTSPolicy(t *testing.T) {
	p, err := parseSTSPolicy(strings.NewReader("version: STSv1\r\nmode: enforce\r\nmx: Mail.Example.Org.\r\nmx: *.example.net\r\nmax_age: 86400\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != "enforce" || p.MaxAge != "86400" || len(p.MX) != 2 || p.MX[0] != "mail.example.org" {
		t.Errorf("policy = %+v", p)
	}
	if _, err := parseSTSPolicy(strings.NewReader("mode: enforce\n")); err == nil {
		t.Error("a policy without version: STSv1 was accepted")
	}
}

func TestSTSMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, host string
		want          bool
	}{
		{"mail.example.org", "mail.example.org", true},
		{"*.example.org", "mail.example.org", true},
		{"*.example.org", "a.mail.example.org", false}, // a wildcard covers one label only
		{"*.example.org", "example.org", false},
		{"mail.example.org", "mx.example.org", false},
	} {
		if got := stsMatch(c.pattern, c.host); got != c.want {
			t.Errorf("stsMatch(%q, %q) = %v, want %v", c.pattern, c.host, got, c.want)
		}
	}
}

// stsServer serves policy at /.well-known/mta-sts.txt over HTTPS with a certificate for mta-sts.DOMAIN
// from a test CA.
func stsServer(t *testing.T, ca *testCA, domain, policy string, expired bool) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(policy))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point of some cases
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, expired, "mta-sts."+domain)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL + "/.well-known/mta-sts.txt"
}

func TestMTASTSAndTLSRPT(t *testing.T) {
	ca := mustCA(t)
	srv := dnstest.Start(t,
		"sts.test. MX 10 mail.sts.test.",
		"sts.test. MX 20 backup.sts.test.",
		"mail.sts.test. A 127.0.0.30",
		"backup.sts.test. A 127.0.0.31",
		`_mta-sts.sts.test. TXT "v=STSv1; id=2026120401"`,
		`_smtp._tls.sts.test. TXT "v=TLSRPTv1; rua=mailto:tls@sts.test"`,
		`_mta-sts.noid.test. TXT "v=STSv1;"`,
		`_smtp._tls.norua.test. TXT "v=TLSRPTv1;"`,
	)
	opts := dnsOnly("sts.test")
	opts.RootCAs = ca.pool
	opts.MTASTSURL = stsServer(t, ca, "sts.test", "version: STSv1\nmode: enforce\nmx: mail.sts.test\nmax_age: 604800\n", false)
	rep := runAudit(t, srv, opts)
	mustLevel(t, rep, "mta-sts", "record", Pass, "id=2026120401")
	mustLevel(t, rep, "mta-sts", "mode", Pass, "enforce")
	mustLevel(t, rep, "mta-sts", "mx", Pass, "mail.sts.test is listed")
	mustLevel(t, rep, "mta-sts", "mx", Fail, "backup.sts.test is not in the policy")
	mustLevel(t, rep, "tls-rpt", "record", Pass, "rua=mailto:tls@sts.test")

	opts.MTASTSURL = stsServer(t, ca, "sts.test", "version: STSv1\nmode: testing\nmx: *.sts.test\nmax_age: 604800\n", false)
	rep = runAudit(t, srv, opts)
	mustLevel(t, rep, "mta-sts", "mode", Warn, "mode: testing")
	mustLevel(t, rep, "mta-sts", "max_age", Pass, "604800")
	mustNone(t, rep, "mta-sts", "mx", Fail)

	opts.MTASTSURL = stsServer(t, ca, "sts.test", "version: STSv1\nmode: enforce\nmx: *.sts.test\nmax_age: 3600\n", false)
	rep = runAudit(t, srv, opts)
	mustLevel(t, rep, "mta-sts", "max_age", Warn, "within a day")
	opts.MTASTSURL = stsServer(t, ca, "sts.test", "version: STSv1\nmode: enforce\nmx: *.sts.test\n", false)
	rep = runAudit(t, srv, opts)
	mustLevel(t, rep, "mta-sts", "max_age", Fail, `max_age ""`)

	// The policy host's certificate has expired: the policy cannot be trusted.
	opts.MTASTSURL = stsServer(t, ca, "sts.test", "version: STSv1\nmode: enforce\nmx: *.sts.test\n", true)
	rep = runAudit(t, srv, opts)
	mustLevel(t, rep, "mta-sts", "policy", Fail, "expired")

	// A certificate from a CA the audit does not trust.
	opts.MTASTSURL = stsServer(t, mustCA(t), "sts.test", "version: STSv1\nmode: enforce\nmx: *.sts.test\n", false)
	rep = runAudit(t, srv, opts)
	mustLevel(t, rep, "mta-sts", "policy", Fail, "unknown authority")

	rep = runAudit(t, srv, dnsOnly("noid.test"))
	mustLevel(t, rep, "mta-sts", "record", Fail, "no id")
	mustLevel(t, rep, "tls-rpt", "record", Warn, "no TLS-RPT record")
	rep = runAudit(t, srv, dnsOnly("norua.test"))
	mustLevel(t, rep, "mta-sts", "record", Warn, "no MTA-STS record")
	mustLevel(t, rep, "tls-rpt", "record", Fail, "no rua")
}
