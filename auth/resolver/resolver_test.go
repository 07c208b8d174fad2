package resolver

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/config"
)

func newTest(t *testing.T, srv *dnstest.Server) *Resolver {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Servers = []string{srv.Addr}
	cfg.Timeout = config.Duration(150 * time.Millisecond)
	cfg.Retries = 1
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestErrorsClassified(t *testing.T) {
	srv := dnstest.Start(t,
		`ok.test. 300 IN TXT "v=spf1 " "-all"`,
		`nodata.test. 300 IN A 192.0.2.1`,
	)
	srv.Set("fail.test", dnstest.ServFail)
	srv.Set("refused.test", dnstest.Refused)
	srv.Set("silent.test", dnstest.Timeout)
	r := newTest(t, srv)
	ctx := context.Background()

	txt, err := r.LookupTXT(ctx, "ok.test")
	if err != nil || len(txt) != 1 || txt[0] != "v=spf1 -all" {
		t.Fatalf("LookupTXT(ok.test) = %q, %v; want the two strings joined", txt, err)
	}
	tests := []struct {
		name                      string
		notFound, temp, isTimeout bool
	}{
		{"missing.test", true, false, false},
		{"nodata.test", true, false, false},
		{"fail.test", false, true, false},
		{"refused.test", false, true, false},
		{"silent.test", false, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.LookupTXT(ctx, tc.name)
			var de *net.DNSError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *net.DNSError", err, err)
			}
			if de.IsNotFound != tc.notFound || de.IsTemporary != tc.temp || de.IsTimeout != tc.isTimeout {
				t.Errorf("%v: notfound=%v temporary=%v timeout=%v, want %v %v %v", err,
					de.IsNotFound, de.IsTemporary, de.IsTimeout, tc.notFound, tc.temp, tc.isTimeout)
			}
			if IsNotFound(err) != tc.notFound || IsTemporary(err) != tc.temp {
				t.Errorf("IsNotFound/IsTemporary disagree with the error fields")
			}
		})
	}
	st := r.Stats()
	if st.Timeouts < 2 { // silent.test: first attempt and one retry
		t.Errorf("Timeouts = %d, want >= 2", st.Timeouts)
	}
}

func TestTruncationRetriesOverTCP(t *testing.T) {
	srv := dnstest.Start(t, `big.test. 300 IN TXT "hello"`)
	srv.Set("big.test", dnstest.Truncate)
	r := newTest(t, srv)
	txt, err := r.LookupTXT(context.Background(), "big.test")
	if err != nil || len(txt) != 1 || txt[0] != "hello" {
		t.Fatalf("LookupTXT = %q, %v", txt, err)
	}
	if st := r.Stats(); st.Truncated != 1 {
		t.Errorf("Truncated = %d, want 1", st.Truncated)
	}
	if n := srv.Count("big.test", dns.TypeTXT); n != 2 {
		t.Errorf("server saw %d questions, want 2 (UDP then TCP)", n)
	}
}

func TestCacheHonoursTTL(t *testing.T) {
	srv := dnstest.Start(t, `a.test. 30 IN A 192.0.2.1`, `b.test. 300 IN A 192.0.2.2`)
	r := newTest(t, srv)
	now := time.Now()
	r.now = func() time.Time { return now }
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := r.LookupIP(ctx, "ip4", "a.test"); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Count("a.test", dns.TypeA); n != 1 {
		t.Fatalf("within TTL the server saw %d questions, want 1", n)
	}
	now = now.Add(31 * time.Second)
	if _, err := r.LookupIP(ctx, "ip4", "a.test"); err != nil {
		t.Fatal(err)
	}
	if n := srv.Count("a.test", dns.TypeA); n != 2 {
		t.Fatalf("after the TTL the server saw %d questions, want 2", n)
	}
	a, err := r.Query(ctx, "a.test", dns.TypeA)
	if err != nil || a.TTL > 30*time.Second || a.TTL <= 0 {
		t.Errorf("cached TTL = %v, %v; want in (0, 30s]", a.TTL, err)
	}
	st := r.Stats()
	if st.CacheHits != 5 || st.Lookups != 7 {
		t.Errorf("stats = %+v, want 5 hits of 7 lookups", st)
	}
}

func TestNegativeCaching(t *testing.T) {
	srv := dnstest.Start(t, `x.test. 300 IN A 192.0.2.1`)
	r := newTest(t, srv)
	now := time.Now()
	r.now = func() time.Time { return now }
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := r.LookupTXT(ctx, "nx.test"); !IsNotFound(err) {
			t.Fatalf("want not found, got %v", err)
		}
	}
	if n := srv.Count("nx.test", dns.TypeTXT); n != 1 {
		t.Fatalf("NXDOMAIN asked %d times, want 1 (cached)", n)
	}
	now = now.Add(61 * time.Second) // dnstest's SOA minimum is 60 s
	_, _ = r.LookupTXT(ctx, "nx.test")
	if n := srv.Count("nx.test", dns.TypeTXT); n != 2 {
		t.Fatalf("NXDOMAIN asked %d times after the SOA minimum, want 2", n)
	}
	// Temporary failures are never cached.
	srv.Set("sf.test", dnstest.ServFail)
	_, _ = r.LookupTXT(ctx, "sf.test")
	_, _ = r.LookupTXT(ctx, "sf.test")
	if n := srv.Count("sf.test", dns.TypeTXT); n != 2 { // one server: SERVFAIL is final, but never cached
		t.Errorf("SERVFAIL asked %d times, want 2", n)
	}
}

func TestSingleflight(t *testing.T) {
	srv := dnstest.Start(t, `slow.test. 300 IN TXT "x"`)
	srv.Delay("slow.test", 100*time.Millisecond)
	r := newTest(t, srv)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.LookupTXT(context.Background(), "slow.test"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := srv.Count("slow.test", dns.TypeTXT); n != 1 {
		t.Errorf("20 concurrent lookups caused %d queries, want 1", n)
	}
}

func TestCNAMEAndPTR(t *testing.T) {
	srv := dnstest.Start(t,
		`alias.test. 300 IN CNAME real.test.`,
		`real.test. 120 IN A 192.0.2.7`,
		`loop1.test. 300 IN CNAME loop2.test.`,
		`loop2.test. 300 IN CNAME loop1.test.`,
		`7.2.0.192.in-addr.arpa. 300 IN PTR real.test.`,
		`mx.test. 300 IN MX 10 real.test.`,
	)
	r := newTest(t, srv)
	ctx := context.Background()
	ips, err := r.LookupIPAddr(ctx, "alias.test")
	if err != nil || len(ips) != 1 || !ips[0].IP.Equal(net.ParseIP("192.0.2.7")) {
		t.Fatalf("LookupIPAddr(alias) = %v, %v", ips, err)
	}
	if _, err := r.LookupIPAddr(ctx, "loop1.test"); err == nil {
		t.Errorf("CNAME loop resolved")
	}
	names, err := r.LookupAddr(ctx, "192.0.2.7")
	if err != nil || len(names) != 1 || names[0] != "real.test." {
		t.Errorf("LookupAddr = %v, %v", names, err)
	}
	mxs, err := r.LookupMX(ctx, "mx.test")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "real.test." || mxs[0].Pref != 10 {
		t.Errorf("LookupMX = %v, %v", mxs, err)
	}
	if _, err := r.LookupTXT(ctx, strings.Repeat("a", 70)+".test"); !IsNotFound(err) {
		t.Errorf("over-long label: want not found, got %v", err)
	}
}

func TestContextCancelled(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("silent.test", dnstest.Timeout)
	r := newTest(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := r.LookupTXT(ctx, "silent.test")
	if !IsTemporary(err) {
		t.Fatalf("cancelled lookup: %v, want a temporary error", err)
	}
}

// TestFromConfig: the [dns] table is decoded over the defaults, and every value New refuses is reported at
// its own key and line.
func TestFromConfig(t *testing.T) {
	tests := []struct {
		name, toml string
		wantKey    string // "" for no error
		wantLine   int
	}{
		{"ok", "[dns]\nservers = [\"127.0.0.1:5353\", \"::1\"]\ntimeout = \"1s\"\n", "", 0},
		{"bad server", "[dns]\nservers = [\"resolver.example\"]\n", "dns.servers", 2},
		{"unknown key", "[dns]\nserver = [\"127.0.0.1\"]\n", "dns.server", 2},
		{"zero timeout", "[dns]\nservers = [\"127.0.0.1\"]\ntimeout = \"0s\"\n", "dns.timeout", 3},
		{"bad retries", "[dns]\nservers = [\"127.0.0.1\"]\nretries = 50\n", "dns.retries", 3},
		{"bad edns0_size", "[dns]\nservers = [\"127.0.0.1\"]\nedns0_size = 100\n", "dns.edns0_size", 3},
		{"negative cache_size", "[dns]\nservers = [\"127.0.0.1\"]\ncache_size = -1\n", "dns.cache_size", 3},
		{"max_ttl 1ms", "[dns]\nservers = [\"127.0.0.1\"]\nmax_ttl = \"1ms\"\n", "dns.max_ttl", 3},
		{"negative_ttl 500ms", "[dns]\nservers = [\"127.0.0.1\"]\nnegative_ttl = \"500ms\"\n", "dns.negative_ttl", 3},
		{"negative cache_max_bytes", "[dns]\nservers = [\"127.0.0.1\"]\ncache_max_bytes = -1\n", "dns.cache_max_bytes", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := config.Parse("t.toml", []byte(tc.toml))
			if err != nil {
				t.Fatal(err)
			}
			r, err := FromConfig(f)
			if tc.wantKey != "" {
				var ce *config.Error
				if !errors.As(err, &ce) || ce.File != "t.toml" || ce.Key != tc.wantKey || ce.Line != tc.wantLine {
					t.Fatalf("err = %#v, want a *config.Error at t.toml:%d key %s", err, tc.wantLine, tc.wantKey)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Servers(); len(got) != 2 || got[1] != "[::1]:53" {
				t.Errorf("servers = %v", got)
			}
		})
	}
}
