package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/dkim"
	"github.com/moatmail/moat/auth/resolver/dnstest"
)

// spfZone is a domain whose only MX is mail.D at 127.0.0.20, with the SPF record given.
func spfZone(domain, spfRecord string) []string {
	out := []string{
		domain + ". MX 10 mail." + domain + ".",
		"mail." + domain + ". A 127.0.0.20",
	}
	if spfRecord != "" {
		out = append(out, domain+". TXT \""+spfRecord+"\"")
	}
	return out
}

func TestSPF(t *testing.T) {
	var recs []string
	recs = append(recs, spfZone("good.test", "v=spf1 mx -all")...)
	recs = append(recs, spfZone("two.test", "v=spf1 mx -all")...)
	recs = append(recs, `two.test. TXT "v=spf1 ip4:192.0.2.1 -all"`)
	recs = append(recs, spfZone("syntax.test", "v=spf1 mx ip4:300.1.1.1 -all")...)
	recs = append(recs, spfZone("open.test", "v=spf1 mx +all")...)
	recs = append(recs, spfZone("noall.test", "v=spf1 mx")...)
	recs = append(recs, spfZone("soft.test", "v=spf1 mx ~all")...)
	recs = append(recs, spfZone("notmx.test", "v=spf1 ip4:192.0.2.1 -all")...)
	recs = append(recs, spfZone("none.test", "")...)
	recs = append(recs, spfZone("redir.test", "v=spf1 redirect=good.test")...)
	// Eleven DNS-querying terms: ten includes, each of a record with no lookups of its own, and mx.
	var inc []string
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("i%d.lookups.test", i)
		recs = append(recs, name+`. TXT "v=spf1 ip4:192.0.2.`+fmt.Sprint(i)+` -all"`)
		inc = append(inc, "include:"+name)
	}
	recs = append(recs, spfZone("lookups.test", "v=spf1 "+strings.Join(inc, " ")+" mx -all")...)
	// Three void lookups: a: and mx: of names that do not exist, an include of a name without SPF.
	recs = append(recs, spfZone("void.test", "v=spf1 a:gone1.void.test mx:gone2.void.test include:nospf.void.test mx -all")...)
	recs = append(recs, `nospf.void.test. TXT "hello"`)
	// A loop: a includes b, b includes a.
	recs = append(recs, spfZone("loop.test", "v=spf1 include:b.loop.test mx -all")...)
	recs = append(recs, `b.loop.test. TXT "v=spf1 include:loop.test -all"`)
	// The same include in two branches is not a loop.
	recs = append(recs, spfZone("twice.test", "v=spf1 include:x.twice.test include:y.twice.test mx -all")...)
	recs = append(recs, `x.twice.test. TXT "v=spf1 include:z.twice.test -all"`, `y.twice.test. TXT "v=spf1 include:z.twice.test -all"`,
		`z.twice.test. TXT "v=spf1 ip4:192.0.2.9 -all"`)
	srv := dnstest.Start(t, recs...)

	rep := runAudit(t, srv, dnsOnly("good.test"))
	mustLevel(t, rep, "spf", "record", Pass, "v=spf1 mx -all")
	mustLevel(t, rep, "spf", "syntax", Pass)
	mustLevel(t, rep, "spf", "lookups", Pass, "1 DNS-querying terms")
	mustLevel(t, rep, "spf", "void-lookups", Pass, "0 void")
	mustLevel(t, rep, "spf", "all", Pass, "-all")
	mustLevel(t, rep, "spf", "mx-pass", Pass, "127.0.0.20 (mail.good.test) passes")

	rep = runAudit(t, srv, dnsOnly("two.test"))
	mustLevel(t, rep, "spf", "record", Fail, "2 SPF records")
	rep = runAudit(t, srv, dnsOnly("syntax.test"))
	mustLevel(t, rep, "spf", "syntax", Fail, "ip4:300.1.1.1")
	rep = runAudit(t, srv, dnsOnly("open.test"))
	mustLevel(t, rep, "spf", "all", Fail, "+all")
	rep = runAudit(t, srv, dnsOnly("noall.test"))
	mustLevel(t, rep, "spf", "all", Fail, "no all term")
	rep = runAudit(t, srv, dnsOnly("soft.test"))
	mustLevel(t, rep, "spf", "all", Pass, "~all")
	rep = runAudit(t, srv, dnsOnly("notmx.test"))
	mustLevel(t, rep, "spf", "mx-pass", Fail, "127.0.0.20", "does not pass SPF (fail")
	rep = runAudit(t, srv, dnsOnly("none.test"))
	mustLevel(t, rep, "spf", "record", Fail, "no SPF record")
	rep = runAudit(t, srv, dnsOnly("redir.test"))
	mustLevel(t, rep, "spf", "all", Pass, "redirect=good.test")
	mustLevel(t, rep, "spf", "lookups", Pass, "2 DNS-querying terms")

	rep = runAudit(t, srv, dnsOnly("lookups.test"))
	mustLevel(t, rep, "spf", "lookups", Fail, "11 counted")
	rep = runAudit(t, srv, dnsOnly("void.test"))
	mustLevel(t, rep, "spf", "void-lookups", Fail, "3 void lookups")
	rep = runAudit(t, srv, dnsOnly("loop.test"))
	mustLevel(t, rep, "spf", "include", Warn, "a loop")
	rep = runAudit(t, srv, dnsOnly("twice.test"))
	mustNone(t, rep, "spf", "include", Warn)
	mustLevel(t, rep, "spf", "lookups", Pass, "5 DNS-querying terms")
}

// mustDKIMKey writes a new Ed25519 key file into dir and returns its path and DNS record.
func mustDKIMKey(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	var b strings.Builder
	if err := dkim.Keygen(&b, "example.test", "s", "ed25519"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := dkim.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := dkim.TXTRecord(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return path, rec
}

func TestDKIMKeys(t *testing.T) {
	dir := t.TempDir()
	goodKey, goodRec := mustDKIMKey(t, dir, "good.pem")
	badKey, _ := mustDKIMKey(t, dir, "bad.pem")
	_, otherRec := mustDKIMKey(t, dir, "other.pem")
	srv := dnstest.Start(t,
		`s1._domainkey.dk.test. TXT "`+goodRec+`"`,
		`s2._domainkey.dk.test. TXT "`+otherRec+`"`, // published for a key that is not bad.pem
		`s4._domainkey.dk.test. TXT "v=DKIM1; k=ed25519; p="`,
	)
	conf := mustConfig(t, dir, fmt.Sprintf(`
[[checks.dkimsign.keys]]
domain = "dk.test"
selector = "s1"
key_file = %q
[[checks.dkimsign.keys]]
domain = "dk.test"
selector = "s2"
key_file = %q
[[checks.dkimsign.keys]]
domain = "dk.test"
selector = "s3"
key_file = "good.pem"
[[checks.dkimsign.keys]]
domain = "dk.test"
selector = "s4"
key_file = "good.pem"
[[checks.dkimsign.keys]]
domain = "dk.test"
selector = "s5"
key_file = "missing.pem"
`, goodKey, badKey))
	opts := dnsOnly("dk.test")
	opts.Config = conf
	rep := runAudit(t, srv, opts)
	mustLevel(t, rep, "dkim", "key", Pass, "s1._domainkey.dk.test: published and matches")
	f := mustLevel(t, rep, "dkim", "key", Fail, "s2._domainkey.dk.test: the published key does not match")
	if !strings.Contains(f.Fix, "s2._domainkey.dk.test. IN TXT \"v=DKIM1; k=ed25519; p=") {
		t.Errorf("fix does not give the record to publish: %s", f.Fix)
	}
	mustLevel(t, rep, "dkim", "key", Fail, "s3._domainkey.dk.test: 0 key records")
	mustLevel(t, rep, "dkim", "key", Fail, "s4._domainkey.dk.test", "revoked")
	mustLevel(t, rep, "dkim", "key", Fail, "s5._domainkey.dk.test", "missing.pem")

	rep = runAudit(t, srv, Options{Domain: "dk.test", SkipSMTP: true, SkipMTA: true, Config: mustConfig(t, dir, "")})
	mustLevel(t, rep, "dkim", "keys", Warn, "no DKIM signing keys")
}

func TestDMARC(t *testing.T) {
	srv := dnstest.Start(t,
		`good.test. TXT "v=DMARC1; p=reject; rua=mailto:reports@good.test"`, // not at _dmarc: ignored
		`_dmarc.good.test. TXT "v=DMARC1; p=reject; rua=mailto:reports@good.test,mailto:dmarc@ext.test!10m"`,
		`good.test._report._dmarc.ext.test. TXT "v=DMARC1"`,
		`_dmarc.none.test. TXT "v=DMARC1; p=none; rua=mailto:d@none.test"`,
		`_dmarc.norua.test. TXT "v=DMARC1; p=quarantine"`,
		`_dmarc.ext.test. TXT "v=DMARC1; p=reject; rua=mailto:d@collector.test"`,
		`_dmarc.two.test. TXT "v=DMARC1; p=reject"`,
		`_dmarc.two.test. TXT "v=DMARC1; p=none"`,
		`_dmarc.bad.test. TXT "v=DMARC1; p=sometimes"`,
	)
	rep := runAudit(t, srv, dnsOnly("good.test"))
	mustLevel(t, rep, "dmarc", "record", Pass, "p=reject")
	mustLevel(t, rep, "dmarc", "policy", Pass, "p=reject")
	mustLevel(t, rep, "dmarc", "rua", Pass, "mailto:reports@good.test")
	mustLevel(t, rep, "dmarc", "rua-external", Pass, "ext.test is authorised")

	rep = runAudit(t, srv, dnsOnly("none.test"))
	mustLevel(t, rep, "dmarc", "policy", Warn, "p=none")
	rep = runAudit(t, srv, dnsOnly("norua.test"))
	mustLevel(t, rep, "dmarc", "rua", Warn, "no rua")
	rep = runAudit(t, srv, dnsOnly("ext.test"))
	mustLevel(t, rep, "dmarc", "rua-external", Fail, "collector.test are not authorised", "ext.test._report._dmarc.collector.test")
	rep = runAudit(t, srv, dnsOnly("two.test"))
	mustLevel(t, rep, "dmarc", "record", Fail, "2 DMARC records")
	rep = runAudit(t, srv, dnsOnly("bad.test"))
	mustLevel(t, rep, "dmarc", "record", Fail, "p=sometimes")
	rep = runAudit(t, srv, dnsOnly("missing.test"))
	mustLevel(t, rep, "dmarc", "record", Fail, "no DMARC record at _dmarc.missing.test")
}
