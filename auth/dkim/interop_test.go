package dkim

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/test/stack"
)

// mailDKIMVerify is a Perl script verifying stdin with Mail::DKIM (the library behind SpamAssassin's DKIM
// plugin), with its key lookups sent to the test DNS server given as HOST PORT.
const mailDKIMVerify = `
use strict;
use Mail::DKIM::Verifier;
use Net::DNS;
my ($host, $port) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => [$host], port => $port, recurse => 1, udp_timeout => 5));
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (<STDIN>) { s/\015?\012/\015\012/; $dkim->PRINT($_); }
$dkim->CLOSE;
foreach my $sig ($dkim->signatures) {
    printf "%s d=%s s=%s a=%s %s\n", $sig->result, $sig->domain, $sig->selector, $sig->algorithm, ($sig->result_detail // "");
}
`

func needPerlDKIM(t *testing.T) {
	t.Helper()
	stack.Need(t, "perl")
	if err := exec.Command("perl", "-MMail::DKIM::Verifier", "-MNet::DNS", "-e1").Run(); err != nil {
		if stack.InCI() {
			t.Fatalf("Perl Mail::DKIM or Net::DNS missing (CI=true): %v", err)
		}
		t.Skipf("Perl Mail::DKIM or Net::DNS missing: %v", err)
	}
}

// TestMoatSignatureVerifiesWithMailDKIM signs with moat (RSA-2048 and Ed25519) and verifies with an
// independent implementation, Perl's Mail::DKIM as used by SpamAssassin.
func TestMoatSignatureVerifiesWithMailDKIM(t *testing.T) {
	needPerlDKIM(t)
	srv := dnstest.Start(t)
	dir := t.TempDir()
	rsaKey := mustKey(t, srv, dir, "example.test", "rsa1", "rsa")
	edKey := mustKey(t, srv, dir, "example.test", "ed1", "ed25519")
	e := engine(t, srv, fmt.Sprintf(`[checks.dkimsign]
[[checks.dkimsign.keys]]
domain = "example.test"
selector = "rsa1"
key_file = %q
[[checks.dkimsign.keys]]
domain = "example.test"
selector = "ed1"
key_file = %q
`, rsaKey, edKey))
	m := plain + "A second paragraph with trailing spaces   \r\n\r\n\r\n"
	signed := signWithMoat(t, e, []byte(m))
	script := filepath.Join(dir, "verify.pl")
	if err := os.WriteFile(script, []byte(mailDKIMVerify), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(srv.Addr, ":")
	cmd := exec.Command("perl", script, host, port)
	cmd.Stdin = bytes.NewReader(signed)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("perl: %v\n%s", err, out)
	}
	got := string(out)
	t.Logf("Mail::DKIM says:\n%s", got)
	if !strings.Contains(got, "pass d=example.test s=rsa1 a=rsa-sha256") {
		t.Errorf("Mail::DKIM did not pass the RSA signature")
	}
	// Ed25519 (RFC 8463): Debian 12's Mail::DKIM (1.20230212) has no ed25519-sha256 verifier and says
	// "unsupported algorithm"; any other verdict than pass or that one is a failure.
	switch {
	case strings.Contains(got, "pass d=example.test s=ed1 a=ed25519-sha256"):
	case strings.Contains(got, "s=ed1 a=ed25519-sha256 invalid (unsupported algorithm"):
		t.Logf("this Mail::DKIM cannot verify Ed25519; the Ed25519 signature is checked by moat's verifier only")
	default:
		t.Errorf("Mail::DKIM rejected the Ed25519 signature")
	}
	// Tampered: Mail::DKIM must fail it, proving the check above can fail.
	cmd = exec.Command("perl", script, host, port)
	cmd.Stdin = bytes.NewReader(bytes.Replace(signed, []byte("Bob"), []byte("Rob"), 1))
	out, _ = cmd.CombinedOutput()
	if strings.Contains(string(out), "pass d=example.test s=rsa1") {
		t.Errorf("Mail::DKIM passed a tampered message:\n%s", out)
	}
}

// TestOpenDKIMSignatureVerifiedByMoat signs with OpenDKIM's opendkim-testmsg and verifies with moat.
// opendkim-testmsg always signs with rsa-sha1, which RFC 8301 section 3.1 forbids verifiers to accept: moat
// must answer permerror for it, having found and parsed the key (so canonicalization and lookup worked), and
// pass the same message once the signature is redone by moat with rsa-sha256 over the same key.
func TestOpenDKIMSignatureVerifiedByMoat(t *testing.T) {
	stack.Need(t, "opendkim-testmsg")
	srv := dnstest.Start(t)
	dir := t.TempDir()
	key := mustKey(t, srv, dir, "example.test", "od", "rsa")
	// opendkim wants the bare PEM.
	data, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	pemOnly, _, _ := bytes.Cut(data, []byte("\n;"))
	if err := os.WriteFile(key, pemOnly, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(stack.Bin(t, "opendkim-testmsg"), "-C", "-d", "example.test", "-s", "od", "-k", key, "-t", dir)
	cmd.Stdin = strings.NewReader(plain)
	signed, err := cmd.Output()
	if err != nil {
		t.Fatalf("opendkim-testmsg: %v", err)
	}
	signed = bytes.ReplaceAll(bytes.ReplaceAll(signed, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	if !bytes.HasPrefix(signed, []byte("DKIM-Signature:")) {
		t.Fatalf("opendkim-testmsg output does not start with a signature:\n%s", signed)
	}
	e := engine(t, srv, "[checks.dkim]\n")
	out, s := deliver(t, e, signed, false, 33)
	ar := authResults(out)
	if !strings.Contains(ar, "dkim=permerror") || !strings.Contains(ar, "sha1") || !strings.Contains(ar, "header.s=od") {
		t.Errorf("Authentication-Results %q, want permerror for rsa-sha1 (RFC 8301)", ar)
	}
	if got := s.Get(FactPassDomains); got != "" {
		t.Errorf("dkim/pass-domains = %q, want empty", got)
	}
	// The same key and message signed by moat with rsa-sha256 pass.
	signer := engine(t, srv, fmt.Sprintf("[checks.dkimsign]\n[[checks.dkimsign.keys]]\ndomain = \"example.test\"\nselector = \"od\"\nkey_file = %q\n", key))
	resigned := signWithMoat(t, signer, []byte(plain))
	out, _ = deliver(t, e, resigned, false, 33)
	if ar := authResults(out); !strings.Contains(ar, "dkim=pass header.d=example.test header.s=od") {
		t.Errorf("Authentication-Results %q, want pass", ar)
	}
}
