package resolver

import (
	"time"

	"github.com/miekg/dns"
)

// The answer cache: TTL-honouring, negative caching, bounded by entries and by bytes.

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
