package resolver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/config"
)

// bigTXT is a TXT record of about 16 KB at name.
func bigTXT(name string) dns.RR {
	var strs []string
	for i := 0; i < 64; i++ {
		strs = append(strs, strings.Repeat("x", 250))
	}
	return &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 3600}, Txt: strs}
}

// TestCacheBoundedByBytes: many large answers stay within cache_max_bytes although the entry bound is far
// away; small answers are cached as before.
func TestCacheBoundedByBytes(t *testing.T) {
	srv := dnstest.Start(t, `small.test. 300 IN TXT "v=spf1 -all"`)
	for i := 0; i < 100; i++ {
		srv.AddRR(bigTXT(fmt.Sprintf("big%d.test.", i)))
		srv.Set(fmt.Sprintf("big%d.test", i), dnstest.Truncate) // too big for UDP: over TCP
	}
	cfg := DefaultConfig()
	cfg.Servers = []string{srv.Addr}
	cfg.Timeout = config.Duration(2 * time.Second)
	cfg.CacheMaxBytes = 512 << 10
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		txt, err := r.LookupTXT(ctx, fmt.Sprintf("big%d.test", i))
		if err != nil || len(txt) != 1 || len(txt[0]) != 64*250 {
			t.Fatalf("big%d: %d records, %v", i, len(txt), err)
		}
	}
	n, bytes := r.CacheUsage()
	if bytes > cfg.CacheMaxBytes {
		t.Errorf("cache holds %d bytes in %d entries, over cache_max_bytes %d", bytes, n, cfg.CacheMaxBytes)
	}
	if n == 0 || n >= 100 {
		t.Errorf("cache holds %d of 100 answers, want some but not all", n)
	}
	// The byte count is what the entries hold, not a counter drifting away.
	r.mu.Lock()
	var sum int64
	for _, e := range r.cache {
		sum += e.size
	}
	r.mu.Unlock()
	if sum != bytes {
		t.Errorf("cacheBytes = %d, entries sum to %d", bytes, sum)
	}

	if _, err := r.LookupTXT(ctx, "small.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupTXT(ctx, "small.test"); err != nil {
		t.Fatal(err)
	}
	if c := srv.Count("small.test.", dns.TypeTXT); c != 1 {
		t.Errorf("small answer asked %d times, want 1 (cached)", c)
	}
	r.FlushCache()
	if n, b := r.CacheUsage(); n != 0 || b != 0 {
		t.Errorf("after flush: %d entries, %d bytes", n, b)
	}
}

// TestCacheSkipsHugeAnswer: an answer larger than a sixteenth of the budget is not cached at all.
func TestCacheSkipsHugeAnswer(t *testing.T) {
	srv := dnstest.Start(t)
	srv.AddRR(bigTXT("huge.test."))
	srv.Set("huge.test", dnstest.Truncate)
	cfg := DefaultConfig()
	cfg.Servers = []string{srv.Addr}
	cfg.CacheMaxBytes = 64 << 10
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := r.LookupTXT(context.Background(), "huge.test"); err != nil {
			t.Fatal(err)
		}
	}
	if c := srv.Count("huge.test.", dns.TypeTXT); c != 4 {
		t.Errorf("huge answer asked %d times, want 4 (UDP and TCP twice: not cached)", c)
	}
}

// TestFormErrRetriedWithoutEDNS0: RFC 6891 section 7.
func TestFormErrRetriedWithoutEDNS0(t *testing.T) {
	srv := dnstest.Start(t, `old.test. 300 IN A 192.0.2.7`)
	srv.Set("old.test", dnstest.FormErrEDNS)
	r := newTest(t, srv)
	ips, err := r.LookupIP(context.Background(), "ip4", "old.test")
	if err != nil || len(ips) != 1 || ips[0].String() != "192.0.2.7" {
		t.Fatalf("LookupIP(old.test) = %v, %v; want 192.0.2.7 from the retry without EDNS0", ips, err)
	}
	if c := srv.Count("old.test.", dns.TypeA); c != 2 {
		t.Errorf("server asked %d times, want 2 (with, then without EDNS0)", c)
	}
}

// TestUnicodeNamesAskedAsALabels: a U-label is never sent raw.
func TestUnicodeNamesAskedAsALabels(t *testing.T) {
	srv := dnstest.Start(t, `_dmarc.xn--bcher-kva.example. 300 IN TXT "v=DMARC1; p=reject"`)
	r := newTest(t, srv)
	txt, err := r.LookupTXT(context.Background(), "_dmarc.Bücher.example")
	if err != nil || len(txt) != 1 {
		t.Fatalf("LookupTXT(_dmarc.Bücher.example) = %q, %v; want the record at the A-label", txt, err)
	}
	if _, err := r.LookupTXT(context.Background(), "_dmarc.a\u00ad\u200d\u0301.example"); err == nil {
		t.Errorf("a name that does not convert was looked up")
	}
}
