// Package resolver implements the one DNS stub resolver that moat's DNS checks share (rDNS, DNSBL, SPF, DKIM,
// DMARC). It is a service below policy: cmd/moat builds it from the [dns] table ([FromConfig]) the first time
// a check asks the policy.Env for it.
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
)

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
			return nil, &config.KeyError{Key: "servers", Err: fmt.Errorf("resolver: no servers configured and %s unreadable: %w", ResolvConf, err)}
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, config.KeyErrorf("servers", "resolver: no servers configured and none in %s", ResolvConf)
		}
	}
	norm := make([]string, 0, len(servers))
	for _, s := range servers {
		n, err := normalizeServer(s)
		if err != nil {
			return nil, &config.KeyError{Key: "servers", Err: err}
		}
		norm = append(norm, n)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
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
