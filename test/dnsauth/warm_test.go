package dnsauth

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/dkim"
	_ "github.com/moatmail/moat/auth/dmarc"
	_ "github.com/moatmail/moat/auth/rdns"
	"github.com/moatmail/moat/auth/resolver/dnstest"
	_ "github.com/moatmail/moat/auth/spf"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	_ "github.com/moatmail/moat/rules/dnsbl"
)

// In-process measurements: the whole DNS check set in one engine against the in-process DNS server, which
// counts the questions it gets.

type inproc struct {
	srv    *dnstest.Server
	full   *policy.Engine
	base   *policy.Engine
	signed []byte
}

func newInproc(t testing.TB) *inproc {
	key, err := dkim.GenerateKey("rsa")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := dkim.TXTRecord(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.Start(t,
		"1.2.0.192.in-addr.arpa. 300 IN PTR client.moat.test.",
		"client.moat.test. 300 IN A 192.0.2.1",
		`client.moat.test. 300 IN TXT "v=spf1 a -all"`,
		`signed.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`_dmarc.signed.test. 300 IN TXT "v=DMARC1; p=reject"`,
	)
	var parts []string
	for len(rec) > 200 {
		parts = append(parts, `"`+rec[:200]+`"`)
		rec = rec[200:]
	}
	parts = append(parts, `"`+rec+`"`)
	srv.MustAdd(t, "sel._domainkey.signed.test. 300 IN TXT "+strings.Join(parts, " "))
	m := []byte(fmt.Sprintf("From: <alice@signed.test>\r\nTo: <%s>\r\nSubject: warm\r\nDate: %s\r\nMessage-ID: <1@signed.test>\r\n\r\n%s",
		rcpt, time.Now().UTC().Format(time.RFC1123Z), strings.Repeat("Hello Bob, a line of text for the body.\r\n", 120)))
	sig, err := dkim.Sign(context.Background(), bytes.NewReader(m), "signed.test", "sel", key, []string{"From", "To", "Subject", "Date", "Message-ID"})
	if err != nil {
		t.Fatal(err)
	}
	in := &inproc{srv: srv, signed: append([]byte("DKIM-Signature:"+strings.ReplaceAll(sig, "\n", "\r\n")+"\r\n"), m...)}
	build := func(checks string) *policy.Engine {
		return policytest.Engine(t, fmt.Sprintf("[dns]\nservers = [%q]\ntimeout = \"1s\"\n[policy]\nauthserv_id = \"mx.moat.test\"\n%s", srv.Addr, checks))
	}
	in.full = build(strings.Replace(checksConfig, "[checks.rdns]", "[checks.rdns]\nhelo_ptr_mismatch = \"score:1\"", 1))
	in.base = build("")
	return in
}

// deliver runs one whole SMTP session with one message through e.
func (in *inproc) deliver(t testing.TB, e *policy.Engine) policy.Outcome {
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	s.Helo = "client.moat.test"
	e.Connect(ctx, s)
	e.Helo(ctx, s)
	e.Mail(ctx, s, "alice@signed.test", "")
	if _, d := e.Rcpt(ctx, s, rcpt, ""); d.Action != policy.ActContinue {
		t.Fatalf("rcpt: %+v", d)
	}
	s.Headers = policytest.Headers(in.signed)
	e.Headers(ctx, s)
	for i := 0; i < len(in.signed); i += 16384 {
		e.WriteBody(s, in.signed[i:min(i+16384, len(in.signed))])
	}
	return e.EOM(ctx, s, policytest.Msg(in.signed))
}

// TestWarmCacheNoRepeatedQueries: the first message asks the DNS; the next ones, within the TTLs, ask
// nothing at all.
func TestWarmCacheNoRepeatedQueries(t *testing.T) {
	in := newInproc(t)
	out := in.deliver(t, in.full)
	ar := policytest.AuthResults(out)
	for _, want := range []string{"iprev=pass", "spf=pass", "dkim=pass", "dmarc=pass"} {
		if !strings.Contains(ar, want) {
			t.Fatalf("first message: Authentication-Results %q lacks %q", ar, want)
		}
	}
	cold := in.srv.Counts()
	var names []string
	for k, v := range cold {
		names = append(names, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(names)
	t.Logf("cold message: %d queries: %s", in.srv.Total(), strings.Join(names, " "))
	for k, v := range cold {
		if v != 1 {
			t.Errorf("cold message asked %s %d times, want once", k, v)
		}
	}
	in.srv.ResetCounts()
	const n = 50
	for i := 0; i < n; i++ {
		if ar := policytest.AuthResults(in.deliver(t, in.full)); !strings.Contains(ar, "dkim=pass") || !strings.Contains(ar, "dmarc=pass") {
			t.Fatalf("message %d: %q", i, ar)
		}
	}
	if q := in.srv.Total(); q != 0 {
		t.Errorf("%d warm messages caused %d DNS queries (%v), want 0", n, q, in.srv.Counts())
	}
}

// BenchmarkDNSChecksWarm measures one message through the whole DNS check set (rdns, dnsbl, spf, dkim, dmarc)
// with a warm cache, against the same message through an engine without checks, in the same loop.
// Reported: ns per message of each, their ratio, and DNS queries per message.
func BenchmarkDNSChecksWarm(b *testing.B) {
	in := newInproc(b)
	in.deliver(b, in.full) // warm the cache
	in.srv.ResetCounts()
	var base, full time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		in.deliver(b, in.base)
		t1 := time.Now()
		in.deliver(b, in.full)
		t2 := time.Now()
		base += t1.Sub(t0)
		full += t2.Sub(t1)
	}
	b.ReportMetric(float64(base.Nanoseconds())/float64(b.N), "ns/msg-baseline")
	b.ReportMetric(float64(full.Nanoseconds())/float64(b.N), "ns/msg-dnschecks")
	b.ReportMetric(float64(full)/float64(base), "x-baseline")
	b.ReportMetric(float64(in.srv.Total())/float64(b.N), "dnsqueries/msg")
}
