package dkim

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

const plain = "From: Alice <alice@example.test>\r\n" +
	"To: bob@dest.test\r\n" +
	"Subject: hello\r\n" +
	"Date: Thu, 26 Nov 2026 22:00:00 +0000\r\n" +
	"Message-ID: <1@example.test>\r\n" +
	"\r\n" +
	"Hello Bob,\r\n\r\nthis is a test.\r\n"

// mustKey writes a new key of type kt to dir and publishes its record on srv.
func mustKey(t *testing.T, srv *dnstest.Server, dir, domain, selector, kt string) string {
	t.Helper()
	var out bytes.Buffer
	if err := Keygen(&out, domain, selector, kt); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, domain+"."+selector+".pem")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// The record line Keygen printed must be a valid zone-file line serving the key.
	var rec string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, selector+"._domainkey.") {
			rec = l
		}
	}
	if rec == "" {
		t.Fatalf("Keygen printed no record:\n%s", out.String())
	}
	if err := srv.Add(rec); err != nil {
		t.Fatalf("record %q: %v", rec, err)
	}
	return path
}

func engine(t *testing.T, srv *dnstest.Server, checks string) *policy.Engine {
	t.Helper()
	return policytest.Engine(t, srv.Table("300ms")+policytest.Policy+checks)
}

// signerEngine makes an RSA key (selector rsa1) and an Ed25519 key (selector ed1) for example.test in dir,
// publishes them on srv, and returns an engine that signs with both.
func signerEngine(t *testing.T, srv *dnstest.Server, dir string) *policy.Engine {
	t.Helper()
	rsaKey := mustKey(t, srv, dir, "example.test", "rsa1", "rsa")
	edKey := mustKey(t, srv, dir, "example.test", "ed1", "ed25519")
	return engine(t, srv, fmt.Sprintf(`[checks.dkimsign]
[[checks.dkimsign.keys]]
domain = "example.test"
selector = "rsa1"
key_file = %q
[[checks.dkimsign.keys]]
domain = "example.test"
selector = "ed1"
key_file = %q
`, rsaKey, edKey))
}

// deliver runs one message through e and returns the outcome; chunk is the size of the body writes.
func deliver(t *testing.T, e *policy.Engine, m []byte, auth bool, chunk int) (policy.Outcome, *policy.Session) {
	t.Helper()
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	s.Helo = "client.test"
	if auth {
		s.Auth.Authen = "alice"
	}
	e.Connect(ctx, s)
	e.Helo(ctx, s)
	e.Mail(ctx, s, "alice@example.test", "")
	e.Rcpt(ctx, s, "bob@dest.test", "")
	s.Headers = policytest.Headers(m)
	e.Headers(ctx, s)
	for i := 0; i < len(m); i += chunk {
		e.WriteBody(s, m[i:min(i+chunk, len(m))])
	}
	return e.EOM(ctx, s, policytest.Msg(m)), s
}

// signWithMoat runs m through a dkimsign engine and returns the message with the signature on top.
func signWithMoat(t *testing.T, e *policy.Engine, m []byte) []byte {
	t.Helper()
	out, _ := deliver(t, e, m, true, 4096)
	var signed bytes.Buffer
	n := 0
	for _, h := range out.InsertHeaders {
		if h.Name != "DKIM-Signature" {
			continue
		}
		n++
		if !strings.HasPrefix(h.Value, " ") {
			t.Errorf("signature value does not start with a space: %q", h.Value)
		}
		signed.WriteString("DKIM-Signature:" + strings.ReplaceAll(h.Value, "\n", "\r\n") + "\r\n")
	}
	if n == 0 {
		t.Fatalf("no DKIM-Signature added; outcome %+v", out)
	}
	signed.Write(m)
	return signed.Bytes()
}

func TestSignAndVerify(t *testing.T) {
	srv := dnstest.Start(t)
	dir := t.TempDir()
	signer := signerEngine(t, srv, dir)
	verifier := engine(t, srv, "[checks.dkim]\n")

	signed := signWithMoat(t, signer, []byte(plain))
	for _, chunk := range []int{1, 7, 65536} {
		t.Run(fmt.Sprintf("chunks of %d", chunk), func(t *testing.T) {
			out, s := deliver(t, verifier, signed, false, chunk)
			ar := policytest.AuthResults(out)
			for _, want := range []string{"dkim=pass header.d=example.test header.s=rsa1 header.b=",
				"dkim=pass header.d=example.test header.s=ed1 header.b="} {
				if !strings.Contains(ar, want) {
					t.Errorf("Authentication-Results %q lacks %q", ar, want)
				}
			}
			if got := s.Get(policy.FactDKIMPassDomains); got != "example.test" {
				t.Errorf("dkim/pass-domains = %q", got)
			}
		})
	}
	t.Run("tampered body fails", func(t *testing.T) {
		bad := bytes.Replace(signed, []byte("this is a test"), []byte("this is a trap"), 1)
		out, s := deliver(t, verifier, bad, false, 512)
		ar := policytest.AuthResults(out)
		if !strings.Contains(ar, "dkim=fail") || strings.Contains(ar, "dkim=pass") {
			t.Errorf("Authentication-Results %q, want dkim=fail only", ar)
		}
		if out.Action != policy.ActAccept {
			t.Errorf("a failing signature alone must not refuse: %+v", out.Decision)
		}
		if got := s.Get(policy.FactDKIMPassDomains); got != "" {
			t.Errorf("dkim/pass-domains = %q, want empty", got)
		}
	})
	t.Run("relaxed canonicalization survives rewrapping", func(t *testing.T) {
		re := bytes.Replace(signed, []byte("Subject: hello"), []byte("Subject:   hello "), 1)
		out, _ := deliver(t, verifier, re, false, 512)
		if ar := policytest.AuthResults(out); !strings.Contains(ar, "dkim=pass") {
			t.Errorf("Authentication-Results %q, want pass", ar)
		}
	})
	t.Run("unauthenticated sender not signed", func(t *testing.T) {
		out, _ := deliver(t, signer, []byte(plain), false, 4096)
		for _, h := range out.InsertHeaders {
			if h.Name == "DKIM-Signature" {
				t.Fatalf("signed mail of an unauthenticated client")
			}
		}
	})
}

func TestVerifyResults(t *testing.T) {
	srv := dnstest.Start(t)
	dir := t.TempDir()
	key := mustKey(t, srv, dir, "example.test", "k", "ed25519")
	signer := engine(t, srv, fmt.Sprintf("[checks.dkimsign]\n[[checks.dkimsign.keys]]\ndomain = \"example.test\"\nselector = \"k\"\nkey_file = %q\n", key))
	signed := signWithMoat(t, signer, []byte(plain))

	t.Run("no signature", func(t *testing.T) {
		e := engine(t, srv, "[checks.dkim]\n")
		out, _ := deliver(t, e, []byte(plain), false, 100)
		if ar := policytest.AuthResults(out); !strings.Contains(ar, "dkim=none") {
			t.Errorf("Authentication-Results %q, want dkim=none", ar)
		}
	})
	t.Run("key lookup times out", func(t *testing.T) {
		srv2 := dnstest.Start(t)
		srv2.Set("k._domainkey.example.test", dnstest.Timeout)
		e := engine(t, srv2, "[checks.dkim]\n")
		out, _ := deliver(t, e, signed, false, 100)
		if ar := policytest.AuthResults(out); !strings.Contains(ar, "dkim=temperror") {
			t.Errorf("Authentication-Results %q, want dkim=temperror", ar)
		}
		if out.Action != policy.ActAccept {
			t.Errorf("action %v, want accept (temperror is recorded by default)", out.Action)
		}
	})
	t.Run("revoked key", func(t *testing.T) {
		srv3 := dnstest.Start(t, `k._domainkey.example.test. TXT "v=DKIM1; k=ed25519; p="`)
		e := engine(t, srv3, "[checks.dkim]\nfail = \"score:3\"\n")
		out, _ := deliver(t, e, signed, false, 100)
		if ar := policytest.AuthResults(out); !strings.Contains(ar, "dkim=permerror") {
			t.Errorf("Authentication-Results %q, want dkim=permerror", ar)
		}
		if out.Score != 3 {
			t.Errorf("score %g, want 3 from fail = \"score:3\"", out.Score)
		}
	})
	t.Run("signatures bounded", func(t *testing.T) {
		var many bytes.Buffer
		first, _, _ := bytes.Cut(signed, []byte("\r\nFrom:"))
		for i := 0; i < 7; i++ {
			many.Write(first)
			many.WriteString("\r\n")
		}
		many.WriteString(plain)
		e := engine(t, srv, "[checks.dkim]\nmax_signatures = 3\n")
		out, _ := deliver(t, e, many.Bytes(), false, 1000)
		if n := strings.Count(policytest.AuthResults(out), "dkim=pass"); n != 3 {
			t.Errorf("%d results, want 3 (max_signatures)", n)
		}
	})
}

// TestWriteNeverBlocks feeds a large body while the key lookup hangs: every Write must return at once.
func TestWriteNeverBlocks(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("slow._domainkey.example.test", dnstest.Timeout)
	e := policytest.Engine(t, srv.Table("30s")+policytest.Policy+"[checks.dkim]\n")
	m := "DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=slow; c=relaxed/relaxed; h=from; bh=x; b=y\r\n" + plain +
		strings.Repeat("a long body line that goes on and on\r\n", 50000)
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	ctx := context.Background()
	e.Connect(ctx, s)
	e.Mail(ctx, s, "a@example.test", "")
	e.Rcpt(ctx, s, "b@dest.test", "")
	s.Headers = policytest.Headers([]byte(m))
	e.Headers(ctx, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(m); i += 65536 {
			e.WriteBody(s, []byte(m[i:min(i+65536, len(m))]))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("WriteBody blocked while the key lookup was pending")
	}
	for i := 0; i < 500 && srv.Count("slow._domainkey.example.test", dns.TypeTXT) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	// The end of message is bounded by its context, not by the DNS.
	ectx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	out := e.EOM(ectx, s, policytest.Msg(m))
	if ar := policytest.AuthResults(out); !strings.Contains(ar, "dkim=temperror") {
		t.Errorf("Authentication-Results %q, want dkim=temperror", ar)
	}
	if n := srv.Count("slow._domainkey.example.test", dns.TypeTXT); n != 1 {
		t.Errorf("key asked %d times, want 1 (prefetch and verifier share one query)", n)
	}
}

func TestKeygen(t *testing.T) {
	for _, kt := range []string{"rsa", "ed25519"} {
		t.Run(kt, func(t *testing.T) {
			var out bytes.Buffer
			if err := Keygen(&out, "Example.TEST.", "sel", kt); err != nil {
				t.Fatal(err)
			}
			k, err := ParseKey(out.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			rec, err := TXTRecord(k.Public())
			if err != nil {
				t.Fatal(err)
			}
			var line string
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(l, "sel._domainkey.example.test. ") {
					line = l
				}
			}
			rr, err := dns.NewRR(line)
			if err != nil {
				t.Fatalf("record line %q: %v", line, err)
			}
			if got := strings.Join(rr.(*dns.TXT).Txt, ""); got != rec {
				t.Errorf("published %q, key gives %q", got, rec)
			}
			if !strings.Contains(rec, "k="+kt) {
				t.Errorf("record %q lacks k=%s", rec, kt)
			}
		})
	}
	for _, bad := range [][3]string{{"nodot", "s", "rsa"}, {"example.test", "s;x", "rsa"}, {"example.test", "s", "dsa"}} {
		if err := Keygen(io.Discard, bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("Keygen%v: no error", bad)
		}
	}
}

func TestParseKeyPKCS1(t *testing.T) {
	k, err := GenerateKey("rsa")
	if err != nil {
		t.Fatal(err)
	}
	der := x509.MarshalPKCS1PrivateKey(k.(*rsa.PrivateKey))
	got, err := ParseKey(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	if !got.(*rsa.PrivateKey).Equal(k) {
		t.Errorf("PKCS#1 key read back differs")
	}
	if _, err := ParseKey([]byte("no key here")); err == nil {
		t.Errorf("no error without a key")
	}
}

func FuzzParseTags(f *testing.F) {
	f.Add("v=1; a=rsa-sha256; d=example.test; s=sel;\r\n\tb=abc def")
	f.Add(";;=;==")
	f.Fuzz(func(t *testing.T, s string) {
		for k, v := range parseTags(s) {
			if strings.ContainsAny(v, " \t\r\n") {
				t.Fatalf("tag %q kept white space: %q", k, v)
			}
		}
	})
}

func FuzzParseKey(f *testing.F) {
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseKey(b) // must not panic
	})
}
