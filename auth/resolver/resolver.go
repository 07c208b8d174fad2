// Package resolver implements the one DNS stub resolver that moat's DNS checks share (rDNS, DNSBL, SPF, DKIM,
// DMARC).
//
// It sends queries with github.com/miekg/dns to the configured servers (the [dns] table; by default the
// name servers of /etc/resolv.conf), with a per-query timeout and retries over the server list, EDNS0, and a
// retry over TCP when an answer comes back truncated. Answers are kept in a cache that honours their TTL
// (RFC 1035 section 3.2.1) and caches negative answers for the SOA minimum (RFC 2308 section 5). Concurrent
// sessions asking for the same name and type cause one query (singleflight). The cache is bounded twice: by
// entries and by bytes (the wire size of the cached records plus a fixed overhead per entry), so that large
// answers an attacker can make us fetch (50 KB TXT records) cannot fill memory.
//
// A server that answers FORMERR to a query with EDNS0 (RFC 6891 section 7: a responder that does not
// understand OPT) is asked again without it.
//
// Names are asked in ASCII: a label in Unicode (a U-label) is converted to its A-label (RFC 5891) before
// the query; checks convert the domains they compare themselves with addr.DomainASCII.
//
// # Errors
//
// The lookup methods return *net.DNSError like the standard library, so that libraries written for
// net.Resolver (SPF, DKIM) classify failures right: NXDOMAIN and "no data" set IsNotFound; SERVFAIL,
// REFUSED and timeouts set IsTemporary (and IsTimeout for timeouts).
//
// # Configuration
//
//	[dns]
//	servers = ["127.0.0.1:53"]   # host:port; default: /etc/resolv.conf
//	timeout = "2s"               # per query attempt
//	retries = 2                  # further attempts after the first, rotating over servers
//	edns0_size = 1232            # EDNS0 UDP payload size; 0 turns EDNS0 off
//	cache_size = 20000           # entries; 0 turns the cache off
//	cache_max_bytes = 33554432   # bytes of cached records (32 MB); 0 turns the cache off
//	max_ttl = "1h"               # cap on positive TTLs; "0s" caches no positive answer, else at least 1s
//	negative_ttl = "5m"          # cap on negative caching; "0s" caches no negative answer, else at least 1s
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
)

func init() {
	policy.RegisterSection("dns")
}

// Config is the [dns] table.
type Config struct {
	// Servers are host:port addresses; a host without port gets port 53. Empty: /etc/resolv.conf.
	Servers []string `toml:"servers"`
	// Timeout bounds one query attempt to one server.
	Timeout config.Duration `toml:"timeout"`
	// Retries is the number of further attempts after the first one, rotating over Servers.
	Retries int `toml:"retries"`
	// EDNS0Size is the advertised UDP payload size (RFC 6891); 0 turns EDNS0 off.
	EDNS0Size int `toml:"edns0_size"`
	// CacheSize bounds the number of cached answers; 0 turns the cache off.
	CacheSize int `toml:"cache_size"`
	// CacheMaxBytes bounds the memory of the cache: the wire size of the cached records plus a fixed
	// overhead per entry; 0 turns the cache off.
	CacheMaxBytes int64 `toml:"cache_max_bytes"`
	// MaxTTL caps the lifetime of cached positive answers.
	MaxTTL config.Duration `toml:"max_ttl"`
	// NegativeTTL caps the lifetime of cached negative answers (NXDOMAIN, no data).
	NegativeTTL config.Duration `toml:"negative_ttl"`
}

// DefaultConfig returns the defaults of the [dns] table (servers empty: use /etc/resolv.conf).
func DefaultConfig() Config {
	return Config{
		Timeout:       config.Duration(2 * time.Second),
		Retries:       2,
		EDNS0Size:     1232,
		CacheSize:     20000,
		CacheMaxBytes: 32 << 20,
		MaxTTL:        config.Duration(time.Hour),
		NegativeTTL:   config.Duration(5 * time.Minute),
	}
}

// ResolvConf is the file read for servers when none are configured.
var ResolvConf = "/etc/resolv.conf"

// Stats are the resolver's counters, ready to be exported as metrics.
type Stats struct {
	Lookups   uint64 // lookups asked by checks (cache hits included)
	CacheHits uint64 // lookups answered from the cache
	Shared    uint64 // lookups that waited for another session's identical query
	Queries   uint64 // queries sent to a server (retries and TCP retries included)
	Timeouts  uint64 // query attempts that timed out
	Truncated uint64 // UDP answers with TC set, retried over TCP
	Errors    uint64 // lookups that ended in a temporary error
}

// Resolver is a caching DNS stub resolver. It is safe for concurrent use.
type Resolver struct {
	servers   []string
	timeout   time.Duration
	retries   int
	edns0     int
	maxTTL    time.Duration
	negTTL    time.Duration
	cacheSize int
	maxBytes  int64

	udp, tcp *dns.Client
	group    singleflight.Group
	next     atomic.Uint32 // round-robin start over servers

	mu         sync.Mutex
	cache      map[cacheKey]*cacheEntry
	cacheBytes int64 // sum of the entries' size

	lookups, hits, shared, queries, timeouts, truncated, errs atomic.Uint64

	now func() time.Time
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	ans     *Answer
	expires time.Time
	size    int64
}

// entryOverhead is what an entry costs beyond its records' wire size: the map slot, the key, the Answer and
// the RR structs. It is an estimate; it keeps a flood of tiny answers honest.
const entryOverhead = 256

// answerSize estimates the memory of a cached answer.
func answerSize(a *Answer) int64 {
	n := int64(entryOverhead + len(a.Name))
	for _, rr := range a.RRs {
		n += int64(dns.Len(rr)) + 64
	}
	return n
}

// Answer is the result of one question: the response code and the records that answer it (CNAMEs followed).
type Answer struct {
	Name  string // the question name, fully qualified, lower case
	Type  uint16
	Rcode int      // dns.RcodeSuccess, dns.RcodeNameError, …
	RRs   []dns.RR // records of the asked type, owner names possibly CNAME targets
	TTL   time.Duration
}

// New builds a resolver from cfg. Servers default to those in ResolvConf.
func New(cfg Config) (*Resolver, error) {
	servers := cfg.Servers
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile(ResolvConf)
		if err != nil {
			return nil, fmt.Errorf("resolver: no servers configured and %s unreadable: %w", ResolvConf, err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("resolver: no servers configured and none in %s", ResolvConf)
		}
	}
	norm := make([]string, 0, len(servers))
	for _, s := range servers {
		n, err := normalizeServer(s)
		if err != nil {
			return nil, err
		}
		norm = append(norm, n)
	}
	if cfg.Timeout <= 0 {
		return nil, errors.New("resolver: timeout must be positive")
	}
	if cfg.Retries < 0 || cfg.Retries > 10 {
		return nil, errors.New("resolver: retries must be between 0 and 10")
	}
	if cfg.EDNS0Size != 0 && (cfg.EDNS0Size < 512 || cfg.EDNS0Size > 65535) {
		return nil, errors.New("resolver: edns0_size must be 0 or between 512 and 65535")
	}
	if cfg.CacheSize < 0 {
		return nil, errors.New("resolver: cache_size must not be negative")
	}
	if cfg.CacheMaxBytes < 0 {
		return nil, errors.New("resolver: cache_max_bytes must not be negative")
	}
	// TTLs are whole seconds: a cap below one second would turn caching off without saying so.
	if cfg.MaxTTL < 0 || (cfg.MaxTTL > 0 && cfg.MaxTTL.D() < time.Second) {
		return nil, errors.New(`resolver: max_ttl must be "0s" (no positive caching) or at least 1s`)
	}
	if cfg.NegativeTTL < 0 || (cfg.NegativeTTL > 0 && cfg.NegativeTTL.D() < time.Second) {
		return nil, errors.New(`resolver: negative_ttl must be "0s" (no negative caching) or at least 1s`)
	}
	r := &Resolver{
		servers:   norm,
		timeout:   cfg.Timeout.D(),
		retries:   cfg.Retries,
		edns0:     cfg.EDNS0Size,
		maxTTL:    cfg.MaxTTL.D(),
		negTTL:    cfg.NegativeTTL.D(),
		cacheSize: cfg.CacheSize,
		maxBytes:  cfg.CacheMaxBytes,
		udp:       &dns.Client{Net: "udp", Timeout: cfg.Timeout.D()},
		tcp:       &dns.Client{Net: "tcp", Timeout: cfg.Timeout.D()},
		cache:     map[cacheKey]*cacheEntry{},
		now:       time.Now,
	}
	if cfg.EDNS0Size > 0 {
		r.udp.UDPSize = uint16(cfg.EDNS0Size)
	}
	return r, nil
}

func normalizeServer(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("resolver: empty server address")
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s, nil
	}
	h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if net.ParseIP(h) == nil {
		return "", fmt.Errorf("resolver: server %q is not an IP address or IP:port", s)
	}
	return net.JoinHostPort(h, "53"), nil
}

// FromEnv returns the resolver of the configuration being built, creating it from the [dns] table the first
// time a check asks for it. All checks of one configuration share it (and its cache).
func FromEnv(env *policy.Env) (*Resolver, error) {
	v, err := env.Shared("dns", func() (any, error) {
		sec := env.Config.Section("dns")
		cfg := DefaultConfig()
		if err := sec.Decode(&cfg); err != nil {
			return nil, err
		}
		r, err := New(cfg)
		if err != nil {
			key := ""
			switch {
			case strings.Contains(err.Error(), "server"):
				key = "servers"
			case strings.Contains(err.Error(), "timeout"):
				key = "timeout"
			case strings.Contains(err.Error(), "retries"):
				key = "retries"
			case strings.Contains(err.Error(), "edns0"):
				key = "edns0_size"
			case strings.Contains(err.Error(), "cache_size"):
				key = "cache_size"
			case strings.Contains(err.Error(), "cache_max_bytes"):
				key = "cache_max_bytes"
			case strings.Contains(err.Error(), "max_ttl"):
				key = "max_ttl"
			case strings.Contains(err.Error(), "negative_ttl"):
				key = "negative_ttl"
			}
			return nil, sec.Errorf(key, "%v", err)
		}
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Resolver), nil
}

// Stats returns a snapshot of the counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Lookups:   r.lookups.Load(),
		CacheHits: r.hits.Load(),
		Shared:    r.shared.Load(),
		Queries:   r.queries.Load(),
		Timeouts:  r.timeouts.Load(),
		Truncated: r.truncated.Load(),
		Errors:    r.errs.Load(),
	}
}

// Servers returns the servers queried, in order.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// FlushCache empties the cache.
func (r *Resolver) FlushCache() {
	r.mu.Lock()
	r.cache = map[cacheKey]*cacheEntry{}
	r.cacheBytes = 0
	r.mu.Unlock()
}

// CacheUsage returns the number of cached answers and their estimated size in bytes.
func (r *Resolver) CacheUsage() (entries int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache), r.cacheBytes
}

// Query asks for name and qtype, from the cache when possible. A nil error means the server answered with
// NOERROR or NXDOMAIN (see Answer.Rcode); other outcomes are a *net.DNSError with IsTemporary set.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	r.lookups.Add(1)
	an, ascii := addr.ASCIILabels(name)
	fq, ok := wireName(an)
	if !ok || !ascii {
		return nil, &net.DNSError{Err: "invalid domain name", Name: name, IsNotFound: true}
	}
	key := cacheKey{fq, qtype}
	if a := r.cached(key); a != nil {
		r.hits.Add(1)
		return a, nil
	}
	ch := r.group.DoChan(fmt.Sprintf("%s/%d", fq, qtype), func() (any, error) {
		// A query for the same key may have finished between our cache miss and this call: look again, or
		// the name is asked twice.
		if a := r.cached(key); a != nil {
			r.hits.Add(1)
			return a, nil
		}
		// The query outlives the asking session's deadline so that other sessions waiting for it are not
		// cut short; it is bounded by the resolver's own timeouts.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout*time.Duration(r.retries+2))
		defer cancel()
		a, err := r.resolve(qctx, fq, qtype)
		if err == nil {
			r.store(key, a)
		}
		return a, err
	})
	select {
	case res := <-ch:
		if res.Shared {
			r.shared.Add(1)
		}
		if res.Err != nil {
			r.errs.Add(1)
			return nil, res.Err
		}
		return res.Val.(*Answer), nil
	case <-ctx.Done():
		r.errs.Add(1)
		return nil, &net.DNSError{Err: "lookup cancelled: " + ctx.Err().Error(), Name: name,
			IsTimeout: errors.Is(ctx.Err(), context.DeadlineExceeded), IsTemporary: true}
	}
}

func (r *Resolver) cached(key cacheKey) *Answer {
	if r.cacheSize == 0 || r.maxBytes == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[key]
	if !ok {
		return nil
	}
	now := r.now()
	if !now.Before(e.expires) {
		r.remove(key, e)
		return nil
	}
	a := *e.ans
	a.TTL = e.expires.Sub(now)
	return &a
}

// remove deletes an entry; r.mu is held.
func (r *Resolver) remove(key cacheKey, e *cacheEntry) {
	delete(r.cache, key)
	r.cacheBytes -= e.size
}

func (r *Resolver) store(key cacheKey, a *Answer) {
	if r.cacheSize == 0 || r.maxBytes == 0 || a.TTL <= 0 {
		return
	}
	size := answerSize(a)
	if size > r.maxBytes/16 {
		// One answer never takes more than a sixteenth of the cache: it would push out many others.
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.cache[key]; ok {
		r.remove(key, old)
	}
	if len(r.cache) >= r.cacheSize || r.cacheBytes+size > r.maxBytes {
		// Evict expired entries first, then arbitrary ones (map order) down to 90% of both bounds.
		now := r.now()
		for k, e := range r.cache {
			if !now.Before(e.expires) {
				r.remove(k, e)
			}
		}
		for k, e := range r.cache {
			if len(r.cache) < r.cacheSize*9/10 && r.cacheBytes+size <= r.maxBytes*9/10 {
				break
			}
			r.remove(k, e)
		}
	}
	r.cache[key] = &cacheEntry{ans: a, expires: r.now().Add(a.TTL), size: size}
	r.cacheBytes += size
}

const maxCNAME = 8

// resolve sends the question, following CNAME chains that the server did not follow itself.
func (r *Resolver) resolve(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	ans := &Answer{Name: name, Type: qtype}
	qname := name
	seen := map[string]bool{}
	var minTTL uint32 = 1<<32 - 1
	for hop := 0; ; hop++ {
		if hop > maxCNAME || seen[qname] {
			return nil, &net.DNSError{Err: "CNAME loop or chain too long", Name: name}
		}
		seen[qname] = true
		m, server, err := r.exchange(ctx, qname, qtype)
		if err != nil {
			return nil, err
		}
		switch m.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
		default:
			return nil, &net.DNSError{Err: "server answered " + dns.RcodeToString[m.Rcode], Name: name,
				Server: server, IsTemporary: true}
		}
		// Walk the answer section from qname along CNAMEs (RFC 1034 section 3.6.2).
		target := qname
		var rrs []dns.RR
		for step := 0; step <= maxCNAME; step++ {
			var next string
			for _, rr := range m.Answer {
				h := rr.Header()
				if !strings.EqualFold(h.Name, target) {
					continue
				}
				if h.Rrtype == qtype {
					rrs = append(rrs, rr)
					minTTL = min(minTTL, h.Ttl)
				} else if c, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME {
					next = strings.ToLower(c.Target)
					minTTL = min(minTTL, h.Ttl)
				}
			}
			if len(rrs) > 0 || next == "" {
				break
			}
			if seen[next] {
				return nil, &net.DNSError{Err: "CNAME loop", Name: name, Server: server}
			}
			seen[next] = true
			target = next
		}
		if len(rrs) > 0 {
			ans.Rcode = dns.RcodeSuccess
			ans.RRs = rrs
			ans.TTL = min(time.Duration(minTTL)*time.Second, r.maxTTL)
			return ans, nil
		}
		if target != qname && m.Rcode == dns.RcodeSuccess && !hasSOA(m) {
			// The server gave a CNAME without following it: ask for the target.
			delete(seen, target)
			qname = target
			continue
		}
		ans.Rcode = m.Rcode
		ans.TTL = r.negativeTTL(m, minTTL)
		return ans, nil
	}
}

// wireName returns name fully qualified, lower case, in the presentation form a round trip through the
// wire format gives (so that it compares equal to owner names in answers), and whether it is a valid name.
func wireName(name string) (string, bool) {
	fq := dns.Fqdn(strings.ToLower(name))
	if _, ok := dns.IsDomainName(fq); !ok || len(fq) > 254 {
		return "", false
	}
	var buf [256]byte
	n, err := dns.PackDomainName(fq, buf[:], 0, nil, false)
	if err != nil {
		return "", false
	}
	out, _, err := dns.UnpackDomainName(buf[:n], 0)
	if err != nil {
		return "", false
	}
	return strings.ToLower(out), true
}

func hasSOA(m *dns.Msg) bool {
	for _, rr := range m.Ns {
		if _, ok := rr.(*dns.SOA); ok {
			return true
		}
	}
	return false
}

// negativeTTL is the lifetime of a negative answer: the SOA's TTL capped by its MINIMUM field
// (RFC 2308 section 5), itself capped by the configured negative_ttl; one minute without SOA.
func (r *Resolver) negativeTTL(m *dns.Msg, chainTTL uint32) time.Duration {
	ttl := time.Minute
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			break
		}
	}
	ttl = min(ttl, time.Duration(chainTTL)*time.Second)
	return min(ttl, r.negTTL)
}

// exchange sends one question, rotating over servers on failure, retrying over TCP when truncated.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	if r.edns0 > 0 {
		q.SetEdns0(uint16(r.edns0), false)
	}
	start := int(r.next.Add(1))
	var lastErr error
	timedOut := false
	server := ""
	for attempt := 0; attempt <= r.retries; attempt++ {
		if err := ctx.Err(); err != nil {
			lastErr = err
			timedOut = true
			break
		}
		server = r.servers[(start+attempt)%len(r.servers)]
		m, err := r.ask(ctx, q, server)
		if err == nil && m.Rcode == dns.RcodeFormatError && q.IsEdns0() != nil {
			// RFC 6891 section 7: a server that does not know EDNS0 answers FORMERR; ask it again without.
			plain := q.Copy()
			plain.Extra = nil
			m, err = r.ask(ctx, plain, server)
		}
		if err != nil {
			lastErr = err
			if isTimeout(err) {
				timedOut = true
			}
			continue
		}
		if m.Rcode == dns.RcodeServerFailure || m.Rcode == dns.RcodeRefused {
			lastErr = fmt.Errorf("server answered %s", dns.RcodeToString[m.Rcode])
			if attempt < r.retries && len(r.servers) > 1 {
				continue
			}
			return m, server, nil
		}
		return m, server, nil
	}
	msg := "no answer"
	if lastErr != nil {
		msg = lastErr.Error()
	}
	return nil, server, &net.DNSError{Err: msg, Name: name, Server: server, IsTimeout: timedOut, IsTemporary: true}
}

// ask sends q to one server over UDP, again over TCP when the answer is truncated (RFC 7766 section 5,
// RFC 1035 section 4.2.2), and checks that the answer is to this question.
func (r *Resolver) ask(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	q.Id = dns.Id()
	r.queries.Add(1)
	m, _, err := r.udp.ExchangeContext(ctx, q, server)
	if err == nil && m.Truncated {
		r.truncated.Add(1)
		r.queries.Add(1)
		m, _, err = r.tcp.ExchangeContext(ctx, q, server)
	}
	if err != nil {
		if isTimeout(err) {
			r.timeouts.Add(1)
		}
		return nil, err
	}
	if m.Id != q.Id {
		return nil, errors.New("answer id mismatch")
	}
	return m, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// notFound is the error for NXDOMAIN and for an answer without records of the asked type.
func notFound(name string, a *Answer) error {
	msg := "no such host"
	if a.Rcode == dns.RcodeSuccess {
		msg = "no record of the asked type"
	}
	return &net.DNSError{Err: msg, Name: strings.TrimSuffix(name, "."), IsNotFound: true}
}

// records asks and returns the records, or a not-found error when there are none.
func (r *Resolver) records(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	a, err := r.Query(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	if len(a.RRs) == 0 {
		return nil, notFound(name, a)
	}
	return a.RRs, nil
}

// LookupTXT returns the TXT records of name, the strings of each record joined (RFC 7208 section 3.3).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.records(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupMX returns the MX records of name, in the order received.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.records(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA records of host (both asked in parallel). An IP literal is returned
// as is. A temporary failure of one family fails the lookup only when the other family found nothing.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IPAddr{{IP: ip}}, nil
	}
	var (
		wg         sync.WaitGroup
		a4, a6     []dns.RR
		err4, err6 error
	)
	wg.Add(2)
	go func() { defer wg.Done(); a4, err4 = r.records(ctx, host, dns.TypeA) }()
	go func() { defer wg.Done(); a6, err6 = r.records(ctx, host, dns.TypeAAAA) }()
	wg.Wait()
	var out []net.IPAddr
	for _, rr := range a4 {
		out = append(out, net.IPAddr{IP: rr.(*dns.A).A})
	}
	for _, rr := range a6 {
		out = append(out, net.IPAddr{IP: rr.(*dns.AAAA).AAAA})
	}
	if len(out) > 0 {
		return out, nil
	}
	if isTemp(err4) {
		return nil, err4
	}
	if isTemp(err6) {
		return nil, err6
	}
	if err4 != nil {
		return nil, err4
	}
	return nil, err6
}

// LookupIP returns the addresses of host for one family: "ip4" (A) or "ip6" (AAAA).
func (r *Resolver) LookupIP(ctx context.Context, network, host string) ([]net.IP, error) {
	qtype := dns.TypeA
	if network == "ip6" {
		qtype = dns.TypeAAAA
	}
	rrs, err := r.records(ctx, host, qtype)
	if err != nil {
		return nil, err
	}
	out := make([]net.IP, 0, len(rrs))
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A)
		case *dns.AAAA:
			out = append(out, v.AAAA)
		}
	}
	return out, nil
}

// LookupAddr returns the PTR names of an IP address (fully qualified, with the trailing dot).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	rrs, err := r.records(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

func isTemp(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsTemporary
}

// IsNotFound reports whether err says the name or record does not exist (NXDOMAIN or no data).
func IsNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// IsTemporary reports whether err is a temporary failure (timeout, SERVFAIL, REFUSED, cancelled).
func IsTemporary(err error) bool { return isTemp(err) }
