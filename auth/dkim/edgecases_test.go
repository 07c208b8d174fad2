package dkim

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

// TestSignFromInAnyCharset: a display name in a charset Go does not decode is no reason to leave mail
// unsigned; the signature verifies.
func TestSignFromInAnyCharset(t *testing.T) {
	srv := dnstest.Start(t)
	signer := signerEngine(t, srv, t.TempDir())
	verifier := engine(t, srv, "[checks.dkim]\n")
	for _, from := range []string{
		"=?koi8-r?B?8NLJ18XU?= <alice@example.test>",
		"=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?= <alice@example.test>",
		"=?windows-1251?B?z/Do4uXy?= <alice@example.test>",
		"=?gb2312?B?xOO6ww==?= <alice@example.test>",
	} {
		t.Run(from, func(t *testing.T) {
			m := []byte(strings.Replace(plain, "From: Alice <alice@example.test>", "From: "+from, 1))
			signed := signWithMoat(t, signer, m)
			out, s := deliver(t, verifier, signed, false, 512)
			if ar := policytest.AuthResults(out); !strings.Contains(ar, "dkim=pass header.d=example.test") {
				t.Errorf("Authentication-Results %q, want pass", ar)
			}
			if s.Get(policy.FactDKIMPassDomains) != "example.test" {
				t.Errorf("dkim/pass-domains = %q", s.Get(policy.FactDKIMPassDomains))
			}
		})
	}
}

// TestSignUnicodeDomain: a key configured for a U-label domain signs mail whose From: is written either
// way, with d= in A-label form.
func TestSignUnicodeDomain(t *testing.T) {
	srv := dnstest.Start(t)
	dir := t.TempDir()
	key := mustKey(t, srv, dir, "xn--bcher-kva.test", "k", "ed25519")
	signer := engine(t, srv, fmt.Sprintf("[checks.dkimsign]\n[[checks.dkimsign.keys]]\ndomain = \"Bücher.test\"\nselector = \"k\"\nkey_file = %q\n", key))
	verifier := engine(t, srv, "[checks.dkim]\n")
	m := []byte(strings.Replace(plain, "alice@example.test", "alice@bücher.test", 1))
	signed := signWithMoat(t, signer, m)
	if !bytes.Contains(signed, []byte("d=xn--bcher-kva.test")) {
		t.Fatalf("signature lacks d=xn--bcher-kva.test:\n%s", signed)
	}
	out, s := deliver(t, verifier, signed, false, 512)
	if ar := policytest.AuthResults(out); !strings.Contains(ar, "dkim=pass") {
		t.Errorf("Authentication-Results %q, want pass", ar)
	}
	if s.Get(policy.FactDKIMPassDomains) != "xn--bcher-kva.test" {
		t.Errorf("dkim/pass-domains = %q", s.Get(policy.FactDKIMPassDomains))
	}
}

// TestFailActionOnlyWithoutPass: RFC 6376 section 6.1, a failing signature is as if absent. With fail =
// "reject", a broken signature next to a good one is recorded, not acted on; alone, it rejects.
func TestFailActionOnlyWithoutPass(t *testing.T) {
	srv := dnstest.Start(t, `k._domainkey.broken.test. TXT "v=DKIM1; k=ed25519; p="`)
	dir := t.TempDir()
	key := mustKey(t, srv, dir, "example.test", "k", "ed25519")
	signer := engine(t, srv, fmt.Sprintf("[checks.dkimsign]\n[[checks.dkimsign.keys]]\ndomain = \"example.test\"\nselector = \"k\"\nkey_file = %q\n", key))
	signed := signWithMoat(t, signer, []byte(plain))
	broken := "DKIM-Signature: v=1; a=ed25519-sha256; d=broken.test; s=k; c=relaxed/relaxed; h=from; bh=YWJj; b=YWJj\r\n"
	e := engine(t, srv, "[checks.dkim]\nfail = \"reject\"\n")

	out, s := deliver(t, e, append([]byte(broken), signed...), false, 512)
	ar := policytest.AuthResults(out)
	if out.Action != policy.ActAccept {
		t.Errorf("action %v (%s) with one passing signature, want accept; findings %+v", out.Action, out.Reply, s.Findings())
	}
	if !strings.Contains(ar, "dkim=pass header.d=example.test") || !strings.Contains(ar, "header.d=broken.test") {
		t.Errorf("Authentication-Results %q, want both signatures recorded", ar)
	}

	out, _ = deliver(t, e, append([]byte(broken), plain...), false, 512)
	if out.Action != policy.ActReject || !strings.Contains(out.Reply.String(), "5.7.20") {
		t.Errorf("action %v (%s) with only a broken signature, want reject 5.7.20", out.Action, out.Reply)
	}
}

// TestTempErrorReply: a key lookup that fails temporarily answers 451 4.7.0 when temperror = "tempfail".
func TestTempErrorReply(t *testing.T) {
	srv := dnstest.Start(t)
	key := mustKey(t, srv, t.TempDir(), "example.test", "k", "ed25519")
	signer := engine(t, srv, fmt.Sprintf("[checks.dkimsign]\n[[checks.dkimsign.keys]]\ndomain = \"example.test\"\nselector = \"k\"\nkey_file = %q\n", key))
	signed := signWithMoat(t, signer, []byte(plain))
	srv2 := dnstest.Start(t)
	srv2.Set("k._domainkey.example.test", dnstest.ServFail)
	e := engine(t, srv2, "[checks.dkim]\ntemperror = \"tempfail\"\n")
	out, _ := deliver(t, e, signed, false, 512)
	if out.Action != policy.ActTempfail || !strings.HasPrefix(out.Reply.String(), "451 4.7.0 ") {
		t.Errorf("action %v reply %q, want 451 4.7.0", out.Action, out.Reply)
	}
}

// TestKeyFileRelativeToConfig: key_file is read relative to the configuration file's directory.
func TestKeyFileRelativeToConfig(t *testing.T) {
	srv := dnstest.Start(t)
	dir := t.TempDir()
	mustKey(t, srv, dir, "example.test", "k", "ed25519")
	text := srv.Table("300ms") + policytest.Policy +
		"[checks.dkimsign]\n[[checks.dkimsign.keys]]\ndomain = \"example.test\"\nselector = \"k\"\nkey_file = \"example.test.k.pem\"\n"
	path := filepath.Join(dir, "moat.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// Run from elsewhere: the working directory must not matter.
	t.Chdir(t.TempDir())
	f, err := config.Parse(path, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Build(f, nil, policytest.Services()); err != nil {
		t.Fatalf("key_file relative to %s: %v", path, err)
	}
}

// TestDefaultBufferBounded: with the default max_buffer, a session holds at most DefaultMaxBuffer (at most
// 8 MB) while its key lookup hangs, whatever the MTA sends.
func TestDefaultBufferBounded(t *testing.T) {
	if DefaultMaxBuffer > 8<<20 {
		t.Fatalf("DefaultMaxBuffer = %d, want at most 8 MB", DefaultMaxBuffer)
	}
	srv := dnstest.Start(t)
	srv.Set("slow._domainkey.example.test", dnstest.Timeout)
	f := policytest.Parse(t, srv.Table("30s")+policytest.Policy+"[checks.dkim]\n")
	ch, err := setupVerify(f.Section("checks.dkim"), policy.NewEnv(f, nil, policytest.Services()))
	if err != nil {
		t.Fatal(err)
	}
	vc := ch.(*VerifyCheck)
	if vc.maxBuffer != DefaultMaxBuffer {
		t.Fatalf("max_buffer default %d, want %d", vc.maxBuffer, DefaultMaxBuffer)
	}
	m := "DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=slow; c=relaxed/relaxed; h=from; bh=x; b=y\r\n" + plain
	s := policy.NewSession()
	s.Headers = policytest.Headers([]byte(m))
	st := vc.StartBody(context.Background(), s).(*stream)
	chunk := bytes.Repeat([]byte("x"), 65536)
	for i := 0; i < (DefaultMaxBuffer>>16)+32; i++ {
		_, _ = st.Write(chunk)
	}
	st.pipe.mu.Lock()
	held := st.pipe.size
	st.pipe.mu.Unlock()
	if held > DefaultMaxBuffer {
		t.Errorf("session holds %d bytes, over max_buffer %d", held, DefaultMaxBuffer)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	st.Finish(ctx)
}
