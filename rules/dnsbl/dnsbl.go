// Package dnsbl implements moat's DNS list check: DNS block lists and allow lists of client addresses
// (DNSBL/DNSWL, RFC 5782 section 2.1 and 2.4) and right-hand-side lists of domains (RHSBL, section 2.2) for the
// sender and HELO domains.
//
// Every list has a zone, a weight and an optional filter on the 127.x.y.z answers it counts, in postscreen's
// syntax: "zen.example=127.0.0.[2..11]*3". Allow lists have negative weights. The weights of the lists that
// list the client, its HELO domain and its sender domain add up; at or above the threshold the message is
// refused (554 5.7.1) at RCPT, after the white lists had their say and only for clients that are neither
// authenticated nor in the trusted networks. At or below allow_threshold the fact policy.FactDNSWL="yes" is set
// for later checks (greylisting).
//
// Queries to all IP lists run in parallel at connect, the HELO lists at HELO, the sender lists at MAIL. The
// answers 127.255.255.252, .254 and .255 are list errors (query refused, typo, open resolver), never
// listings, and so is any answer outside 127.0.0.0/8 (RFC 5782 section 2.1: listings are 127/8; a list
// that answers public addresses is broken or has expired and now wildcards): they are logged as errors,
// at most once per list every ten minutes, and ignored. A list that does not answer in time counts as not
// listing: a timeout never rejects. Nor does a timeout of an allow list: when an allow list (negative
// weight) could not be asked and the other lists reach the threshold, the answer is 451 4.7.1 (try again
// later) instead of a rejection, since the allow list might have let the client through. Domains (HELO,
// sender) are asked in A-label form.
//
// # Configuration
//
//	[checks.dnsbl]
//	threshold = 3               # total weight that refuses
//	allow_threshold = -1        # total weight at or below which policy.FactDNSWL is set
//	score_factor = 0            # spam score added per unit of weight (0: none)
//
//	[[checks.dnsbl.lists]]
//	zone = "zen.example=127.0.0.[2..11]*3"   # or zone = "zen.example" with codes = "…" and weight = 3
//	reply_text = "blocked using zen.example" # named in the reply only when set
//	type = "ip"                              # ip (default), sender or helo
package dnsbl

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
)

func init() {
	policy.Register("dnsbl", setup)
}

// Reasons.
const (
	ReasonListed = "dnsbl-listed"
	ReasonAllow  = "dnswl-listed"
)

// Facts set for later checks.
const (
	factIP   = "dnsbl/ip"   // "weight|zone1,zone2"
	factHelo = "dnsbl/helo" // same, for the HELO lists
)

type listType int

const (
	typeIP listType = iota
	typeSender
	typeHelo
)

type list struct {
	zone      string
	filter    filter
	weight    float64
	replyText string
	typ       listType
}

type listConfig struct {
	Zone      string  `toml:"zone"`
	Codes     string  `toml:"codes"`
	Weight    float64 `toml:"weight"`
	ReplyText string  `toml:"reply_text"`
	Type      string  `toml:"type"`
}

type cfg struct {
	Threshold      float64      `toml:"threshold"`
	AllowThreshold float64      `toml:"allow_threshold"`
	ScoreFactor    float64      `toml:"score_factor"`
	ReplyCode      int          `toml:"reply_code"`
	Enhanced       string       `toml:"reply_enhanced"`
	Lists          []listConfig `toml:"lists"`
}

// Check is the dnsbl check.
type Check struct {
	res   *resolver.Resolver
	log   *slog.Logger
	lists []list
	c     cfg

	logMu     sync.Mutex
	logged    map[string]time.Time // zone -> when its last list error was logged
	suppressd map[string]int       // zone -> list errors not logged since
	now       func() time.Time
}

// errorLogInterval is the least time between two log lines about one list's error answers.
const errorLogInterval = 10 * time.Minute

func setup(sec *config.Section, env *policy.Env) (policy.Check, error) {
	c := cfg{Threshold: 1, AllowThreshold: -1, ReplyCode: 554, Enhanced: "5.7.1"}
	if err := sec.Decode(&c); err != nil {
		return nil, err
	}
	if err := c.validate(sec); err != nil {
		return nil, err
	}
	ch := &Check{log: env.Logger, c: c, logged: map[string]time.Time{}, suppressd: map[string]int{}, now: time.Now}
	if ch.log == nil {
		ch.log = slog.Default()
	}
	for i, lc := range c.Lists {
		key := fmt.Sprintf("lists[%d]", i)
		l, err := lc.parse(sec, key)
		if err != nil {
			return nil, err
		}
		// The same zone twice for the same kind of query would count its weight twice for one answer. It may
		// appear again with a filter that matches other answers (postscreen style: one weight per code).
		for j, o := range ch.lists {
			if o.typ == l.typ && o.zone == l.zone && o.filter.overlaps(&l.filter) {
				return nil, sec.Errorf(key+".zone", "zone %q already configured in lists[%d] for some of the same answers", l.zone, j)
			}
		}
		ch.lists = append(ch.lists, l)
	}
	res, err := env.Resolver()
	if err != nil {
		return nil, err
	}
	ch.res = res
	return ch, nil
}

// validate checks the table's own keys (not the lists); errors name their key in sec.
func (c cfg) validate(sec *config.Section) error {
	for _, n := range []struct {
		key string
		v   float64
	}{{"threshold", c.Threshold}, {"allow_threshold", c.AllowThreshold}, {"score_factor", c.ScoreFactor}} {
		if !finite(n.v) {
			return sec.Errorf(n.key, "must be a finite number")
		}
	}
	switch {
	case c.Threshold <= 0:
		return sec.Errorf("threshold", "must be positive")
	case c.AllowThreshold >= 0:
		return sec.Errorf("allow_threshold", "must be negative")
	case c.ReplyCode < 500 || c.ReplyCode > 599:
		return sec.Errorf("reply_code", "want a 5xx code")
	case !validEnhanced(c.Enhanced):
		return sec.Errorf("reply_enhanced", "want a 5.x.y enhanced status code (RFC 3463)")
	case len(c.Lists) == 0:
		return sec.Errorf("lists", "no lists configured")
	}
	return nil
}

// parse turns one [[lists]] entry (at key, e.g. "lists[2]", in sec) into a list: the zone with its optional
// filter and weight (postscreen's "zone=filter*weight" or the codes and weight keys, not both), its type.
func (lc listConfig) parse(sec *config.Section, key string) (list, error) {
	zone, f, w, hasW, err := parseSite(lc.Zone)
	if err != nil {
		return list{}, sec.Errorf(key+".zone", "%v", err)
	}
	if _, ok := dns.IsDomainName(zone); !ok || zone == "" {
		return list{}, sec.Errorf(key+".zone", "%q is not a domain name", zone)
	}
	if zone, err = addr.DomainASCII(zone); err != nil {
		return list{}, sec.Errorf(key+".zone", "%v", err)
	}
	if lc.Codes != "" {
		if f.set {
			return list{}, sec.Errorf(key+".codes", "the zone already has a filter")
		}
		if f, err = parseFilter(lc.Codes); err != nil {
			return list{}, sec.Errorf(key+".codes", "%v", err)
		}
	}
	switch {
	case lc.Weight != 0 && hasW:
		return list{}, sec.Errorf(key+".weight", "the zone already has a weight")
	case lc.Weight != 0:
		w = lc.Weight
	case !hasW:
		w = 1
	}
	if !finite(w) {
		return list{}, sec.Errorf(key+".weight", "must be a finite number")
	}
	l := list{zone: zone, filter: f, weight: w, replyText: lc.ReplyText}
	switch strings.ToLower(lc.Type) {
	case "", "ip":
		l.typ = typeIP
	case "sender":
		l.typ = typeSender
	case "helo":
		l.typ = typeHelo
	default:
		return list{}, sec.Errorf(key+".type", "want ip, sender or helo")
	}
	if strings.ContainsAny(lc.ReplyText, "\r\n") {
		return list{}, sec.Errorf(key+".reply_text", "must be one line")
	}
	return l, nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return "dnsbl" }

// Kind implements policy.Check.
func (c *Check) Kind() policy.Kind { return policy.KindAntispam }

// hit is one list that listed the query.
type hit struct {
	l     *list
	codes []netip.Addr
}

// result of querying a set of lists about one name.
type result struct {
	weight   float64
	hits     []hit
	errs     []string
	allowErr bool // an allow list (negative weight) could not be asked
}

// Connect queries the IP lists about the client, all at once.
func (c *Check) Connect(ctx context.Context, s *policy.Session) []policy.Finding {
	if !s.ClientIP.IsValid() {
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "no client address"}}
	}
	q := IPQuery(s.ClientIP)
	r := c.query(ctx, typeIP, q)
	s.Set(factIP, encodeFact(r))
	if r.weight <= c.c.AllowThreshold && len(r.hits) > 0 {
		s.Set(policy.FactDNSWL, "yes")
	}
	return []policy.Finding{c.finding(r, "client "+s.ClientIP.String())}
}

// Helo queries the HELO lists about the HELO domain.
func (c *Check) Helo(ctx context.Context, s *policy.Session) []policy.Finding {
	d := addr.Domain(s.Helo)
	if !c.has(typeHelo) || d == "" || strings.HasPrefix(d, "[") {
		s.Set(factHelo, "")
		return nil
	}
	if _, err := netip.ParseAddr(d); err == nil {
		s.Set(factHelo, "")
		return nil
	}
	d, err := addr.DomainASCII(d)
	if err != nil {
		s.Set(factHelo, "")
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "HELO " + err.Error()}}
	}
	r := c.query(ctx, typeHelo, d)
	s.Set(factHelo, encodeFact(r))
	return []policy.Finding{c.finding(r, "HELO "+d)}
}

// Mail queries the sender lists and decides on the whole: IP, HELO and sender weights together.
func (c *Check) Mail(ctx context.Context, s *policy.Session) []policy.Finding {
	var r result
	if c.has(typeSender) && !s.From.Null() && s.From.Domain != "" && !strings.HasPrefix(s.From.Domain, "[") {
		if d, err := addr.DomainASCII(s.From.Domain); err == nil {
			r = c.query(ctx, typeSender, d)
		} else {
			r.errs = append(r.errs, "sender "+err.Error())
		}
	}
	ipW, ipZones, ipAllowErr := decodeFact(s.Get(factIP))
	heloW, heloZones, heloAllowErr := decodeFact(s.Get(factHelo))
	allowErr := ipAllowErr || heloAllowErr || r.allowErr
	total := ipW + heloW + r.weight
	var zones []string
	zones = append(zones, ipZones...)
	zones = append(zones, heloZones...)
	for _, h := range r.hits {
		zones = append(zones, h.l.zone)
	}
	f := c.finding(r, "sender "+s.From.Domain)
	f.Detail = fmt.Sprintf("total weight %g (ip %g, helo %g, sender %g) from %s", total, ipW, heloW, r.weight,
		strings.Join(zones, ","))
	if len(zones) == 0 {
		f.Status = policy.StatusPass
		if len(r.errs) > 0 {
			f.Status = policy.StatusTempError
		}
		return []policy.Finding{f}
	}
	f.Status = "listed"
	if total <= c.c.AllowThreshold {
		f.Status, f.Reason = "allowed", ReasonAllow
	}
	if c.c.ScoreFactor != 0 {
		f.Score, f.Scored = total*c.c.ScoreFactor, true
	}
	if total < c.c.Threshold {
		return []policy.Finding{f}
	}
	if s.Trusted() {
		f.Detail += "; not refused: client authenticated or trusted"
		f.Score, f.Scored = 0, false
		return []policy.Finding{f}
	}
	if allowErr {
		// An allow list did not answer: its weight might have kept the total under the threshold. Ask the
		// client to come back rather than refuse it for our DNS trouble.
		f.Verdict = policy.Tempfail
		f.Reason = ReasonListed
		f.Detail += "; an allow list could not be asked: tempfail instead of refusal"
		f.Reply = policy.Reply{Code: 451, Enhanced: "4.7.1",
			Text: "Service temporarily unavailable; DNS list check incomplete, please try again later"}
		return []policy.Finding{f}
	}
	f.Verdict = policy.Reject
	f.Reason = ReasonListed
	f.Reply = policy.Reply{Code: c.c.ReplyCode, Enhanced: c.c.Enhanced, Text: c.replyText(s, zones)}
	return []policy.Finding{f}
}

// replyText names the lists that have a reply_text; the others stay unnamed.
func (c *Check) replyText(s *policy.Session, zones []string) string {
	who := "client"
	if s.ClientIP.IsValid() {
		who = "client [" + s.ClientIP.String() + "]"
	}
	var texts []string
	seen := map[string]bool{}
	for _, z := range zones {
		for i := range c.lists {
			l := &c.lists[i]
			if l.zone == z && l.replyText != "" && !seen[l.replyText] {
				seen[l.replyText] = true
				texts = append(texts, strings.ReplaceAll(l.replyText, "{ip}", s.ClientIP.String()))
			}
		}
	}
	if len(texts) == 0 {
		return "Service unavailable; " + who + " is on a DNS block list"
	}
	return "Service unavailable; " + who + " blocked: " + strings.Join(texts, "; ")
}

func (c *Check) has(t listType) bool {
	for _, l := range c.lists {
		if l.typ == t {
			return true
		}
	}
	return false
}

func (c *Check) finding(r result, what string) policy.Finding {
	f := policy.Finding{Status: policy.StatusPass}
	var parts []string
	for _, h := range r.hits {
		f.Tests = append(f.Tests, "DNSBL_"+strings.ToUpper(strings.ReplaceAll(h.l.zone, ".", "_")))
		codes := make([]string, len(h.codes))
		for i, a := range h.codes {
			codes[i] = a.String()
		}
		parts = append(parts, fmt.Sprintf("%s=%s*%g", h.l.zone, strings.Join(codes, "/"), h.l.weight))
	}
	if len(r.hits) > 0 {
		f.Status = "listed"
		f.Detail = what + " listed: " + strings.Join(parts, " ")
	} else {
		f.Detail = what + " not listed"
	}
	if len(r.errs) > 0 {
		f.Detail += "; errors: " + strings.Join(r.errs, "; ")
		if len(r.hits) == 0 {
			f.Status = policy.StatusTempError
		}
	}
	return f
}

// query asks every list of type t about q (already in query form: reversed IP or domain) in parallel.
func (c *Check) query(ctx context.Context, t listType, q string) result {
	type one struct {
		codes  []netip.Addr
		err    string
		failed bool // the lookup itself failed (timeout, SERVFAIL)
	}
	var idx []int
	for i := range c.lists {
		if c.lists[i].typ == t {
			idx = append(idx, i)
		}
	}
	out := make([]one, len(idx))
	var wg sync.WaitGroup
	for j, i := range idx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := &c.lists[i]
			codes, err := Lookup(ctx, c.res, q, l.zone)
			if err != nil {
				out[j].err = fmt.Sprintf("%s: %v", l.zone, err)
				out[j].failed = true
				return
			}
			for _, a := range codes {
				if IsListError(a) {
					// Spamhaus-style error answers: the list refuses us; never a listing.
					c.logListError(l.zone, q, a, "list answered with an error code, ignoring it (check the resolver: big lists refuse public resolvers)")
					out[j].err = fmt.Sprintf("%s: error code %s", l.zone, a)
					continue
				}
				if !In127(a) {
					// RFC 5782 section 2.1: a listing is an address in 127/8. Anything else is a broken
					// or wildcarding list, never a listing.
					c.logListError(l.zone, q, a, "list answered outside 127.0.0.0/8, ignoring it (the list may be broken or expired)")
					out[j].err = fmt.Sprintf("%s: answer %s outside 127.0.0.0/8", l.zone, a)
					continue
				}
				if l.filter.match(a) {
					out[j].codes = append(out[j].codes, a)
				}
			}
		}()
	}
	wg.Wait()
	var r result
	for j, i := range idx {
		if out[j].err != "" {
			r.errs = append(r.errs, out[j].err)
		}
		if out[j].failed && c.lists[i].weight < 0 {
			r.allowErr = true
		}
		if len(out[j].codes) > 0 {
			r.weight += c.lists[i].weight
			r.hits = append(r.hits, hit{l: &c.lists[i], codes: out[j].codes})
		}
	}
	return r
}

// encodeFact writes "weight|zone1,zone2|A", A being "1" when an allow list could not be asked.
func encodeFact(r result) string {
	if len(r.hits) == 0 && !r.allowErr {
		return ""
	}
	zones := make([]string, len(r.hits))
	for i, h := range r.hits {
		zones[i] = h.l.zone
	}
	a := "0"
	if r.allowErr {
		a = "1"
	}
	return strconv.FormatFloat(r.weight, 'g', -1, 64) + "|" + strings.Join(zones, ",") + "|" + a
}

func decodeFact(v string) (weight float64, zones []string, allowErr bool) {
	parts := strings.Split(v, "|")
	if len(parts) != 3 {
		return 0, nil, false
	}
	f, err := strconv.ParseFloat(parts[0], 64)
	if err != nil {
		return 0, nil, false
	}
	if parts[1] != "" {
		zones = strings.Split(parts[1], ",")
	}
	return f, zones, parts[2] == "1"
}

// logListError logs a list's error answer at most once per errorLogInterval and zone, with the number of
// error answers not logged since the last line.
func (c *Check) logListError(zone, q string, a netip.Addr, msg string) {
	c.logMu.Lock()
	now := c.now()
	last, ok := c.logged[zone]
	if ok && now.Sub(last) < errorLogInterval {
		c.suppressd[zone]++
		c.logMu.Unlock()
		return
	}
	n := c.suppressd[zone]
	c.logged[zone] = now
	c.suppressd[zone] = 0
	c.logMu.Unlock()
	c.log.Error("dnsbl: "+msg, "zone", zone, "query", q, "code", a.String(), "not_logged_since_last", n)
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// validEnhanced reports whether s is a permanent enhanced status code 5.x.y (RFC 3463 section 2: subject
// and detail of one to three digits).
func validEnhanced(s string) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || p[0] != "5" {
		return false
	}
	for _, n := range p[1:] {
		if len(n) == 0 || len(n) > 3 {
			return false
		}
		for _, c := range n {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

// In127 reports whether a is in 127.0.0.0/8, where RFC 5782 section 2.1 puts list answers.
func In127(a netip.Addr) bool {
	a = a.Unmap()
	return a.Is4() && a.As4()[0] == 127
}

// IPQuery returns the query prefix for an address: reversed octets for IPv4 (RFC 5782 section 2.1), reversed
// nibbles for IPv6 (section 2.4).
func IPQuery(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		return fmt.Sprintf("%d.%d.%d.%d", b[3], b[2], b[1], b[0])
	}
	b := ip.As16()
	const hexdigits = "0123456789abcdef"
	out := make([]byte, 0, 64)
	for i := len(b) - 1; i >= 0; i-- {
		out = append(out, hexdigits[b[i]&0xf], '.', hexdigits[b[i]>>4], '.')
	}
	return string(out[:len(out)-1])
}

// Lookup asks zone about q (a reversed IP or a domain) and returns the A records found; nil without error
// when not listed.
func Lookup(ctx context.Context, res *resolver.Resolver, q, zone string) ([]netip.Addr, error) {
	ips, err := res.LookupIP(ctx, "ip4", q+"."+zone)
	if err != nil {
		if resolver.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// IsListError reports whether a is one of the error answers 127.255.255.252, .254 and .255.
func IsListError(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	return b[0] == 127 && b[1] == 255 && b[2] == 255 && (b[3] == 252 || b[3] == 254 || b[3] == 255)
}
