package dkim

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/test/stack"
)

// TestMoatSignatureVerifiesWithMailDKIM signs with moat (RSA-2048 and Ed25519) and verifies with an
// independent implementation, Perl's Mail::DKIM as used by SpamAssassin.
func TestMoatSignatureVerifiesWithMailDKIM(t *testing.T) {
	stack.NeedMailDKIM(t)
	srv := dnstest.Start(t)
	dir := t.TempDir()
	e := signerEngine(t, srv, dir)
	m := plain + "A second paragraph with trailing spaces   \r\n\r\n\r\n"
	signed := signWithMoat(t, e, []byte(m))
	got, err := stack.MailDKIMVerify(t, srv.Addr, signed)
	if err != nil {
		t.Fatalf("perl: %v\n%s", err, got)
	}
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
	out, _ := stack.MailDKIMVerify(t, srv.Addr, bytes.Replace(signed, []byte("Bob"), []byte("Rob"), 1))
	if strings.Contains(out, "pass d=example.test s=rsa1") {
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
	ar := policytest.AuthResults(out)
	if !strings.Contains(ar, "dkim=permerror") || !strings.Contains(ar, "sha1") || !strings.Contains(ar, "header.s=od") {
		t.Errorf("Authentication-Results %q, want permerror for rsa-sha1 (RFC 8301)", ar)
	}
	if got := s.Get(policy.FactDKIMPassDomains); got != "" {
		t.Errorf("dkim/pass-domains = %q, want empty", got)
	}
	// The same key and message signed by moat with rsa-sha256 pass.
	signer := engine(t, srv, fmt.Sprintf("[checks.dkimsign]\n[[checks.dkimsign.keys]]\ndomain = \"example.test\"\nselector = \"od\"\nkey_file = %q\n", key))
	resigned := signWithMoat(t, signer, []byte(plain))
	out, _ = deliver(t, e, resigned, false, 33)
	if ar := policytest.AuthResults(out); !strings.Contains(ar, "dkim=pass header.d=example.test header.s=od") {
		t.Errorf("Authentication-Results %q, want pass", ar)
	}
}
