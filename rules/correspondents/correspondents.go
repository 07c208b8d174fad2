// Package correspondents learns trusted correspondents from outbound mail: the people local users write to.
// A message from one of them, proven to come from them, skips greylisting and gets a negative score.
//
// # Recording
//
// Mail from a trusted client (SMTP AUTH or a trusted network, Session.Trusted) whose envelope sender is in a
// local domain records, for that local user and each accepted recipient outside the local domains, the
// recipient's address, the recipient's domain and the message's Message-ID bound to that recipient. Each key expires after expiry
// (365d) and is refreshed whenever it is written again (a new message to that correspondent, or a proven
// message from them). A user keeps at most max_per_user addresses and domains, those used most recently, so
// that a mailing-list blast cannot fill the store, and as many sent Message-IDs in a set of their own, so that
// much mail to few people does not push those people out. The records of a message go to a background writer that batches them: one
// store write per batch (one SQLite transaction, one Redis MULTI/EXEC), never a wait for the SMTP session.
//
// Users and keys are stored as SHA-256 hashes (of the lower-cased address, domain or Message-ID): no address
// is in clear in SQLite or Redis. The hash hides addresses from someone reading the store, not from someone
// who guesses an address and hashes it.
//
// # Matching
//
// A message from remote X to local Y matches when Y wrote to X ("address"), more weakly when Y wrote to X's
// domain ("domain"), or when its In-Reply-To or References names a Message-ID that Y sent to X ("reply"; the
// Message-ID is recorded bound to each remote recipient, so that a third party who quotes it gains nothing).
//
// # Proof
//
// A match counts only with proof that X sent the message, so that a forger cannot borrow a correspondent's
// name. At RCPT, SPF pass for X's domain (policy.FactSPFResult and policy.FactSPFDomain) marks the recipient
// as a correspondent (Finding.Correspondent): greylisting leaves it alone. At end of message, SPF pass or a
// DKIM pass (policy.FactDKIMPassDomains) of a domain aligned with X's (same organizational domain) gives the
// score, and policy.FactCorrespondent = "yes", which the trace header shows as correspondent=yes. Without
// proof nothing changes, and the fact says why (correspondent=unproven-spf-fail). With several recipients the
// message scores only when every accepted local recipient is a correspondent, with the weakest match's score.
package correspondents

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/proof"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/store"
)

// Name is the check's name.
const Name = "correspondents"

// Match kinds, in the order of strength; each is the first letter of its keys in the store.
const (
	MatchAddress = "address"
	MatchReply   = "reply"
	MatchDomain  = "domain"
)

// Statuses of the check's findings.
const (
	StatusRecorded   policy.Status = "recorded"
	StatusUnproven   policy.Status = "unproven"
	StatusNotMatched policy.Status = "none"
)

// Test is the name in X-Spam-Status of a proven correspondent's message.
const Test = "MOAT_CORRESPONDENT"

// maxReferences is how many Message-IDs of In-Reply-To and References are looked up (the latest ones: a long
// thread's References starts with its oldest message).
const maxReferences = 20

// clock is the time source; tests replace it.
var clock = time.Now

func init() {
	policy.Register(Name, setup)
}

// Config is the [checks.correspondents] table.
type Config struct {
	// LocalDomains are the domains of the local users: "example.org" is that domain, ".example.org" its
	// subdomains.
	LocalDomains []string        `toml:"local_domains"`
	Expiry       config.Duration `toml:"expiry"`
	MaxPerUser   int             `toml:"max_per_user"`
	Score        float64         `toml:"score"`
	DomainScore  float64         `toml:"domain_score"`
	// Domains: a message from a domain the user wrote to counts (more weakly); false: only addresses and replies.
	Domains   bool `toml:"domains"`
	QueueSize int  `toml:"queue_size"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Expiry:      config.Duration(365 * 24 * time.Hour),
		MaxPerUser:  1000,
		Score:       -3,
		DomainScore: -1,
		Domains:     true,
		QueueSize:   10000,
	}
}

// DecodeConfig reads and validates a [checks.correspondents] table (without the engine's keys).
func DecodeConfig(sec *config.Section) (Config, error) {
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return cfg, err
	}
	switch {
	case len(cfg.LocalDomains) == 0:
		return cfg, sec.Errorf("local_domains", "must list the local domains (whose users' outbound mail is learned from)")
	case cfg.Expiry <= 0:
		return cfg, sec.Errorf("expiry", "must be positive")
	case cfg.MaxPerUser < 1:
		return cfg, sec.Errorf("max_per_user", "must be at least 1")
	case cfg.Score > 0:
		return cfg, sec.Errorf("score", "must not be positive (it lowers a correspondent's spam score)")
	case cfg.DomainScore > 0:
		return cfg, sec.Errorf("domain_score", "must not be positive")
	case cfg.QueueSize < 1:
		return cfg, sec.Errorf("queue_size", "must be at least 1")
	}
	for i, d := range cfg.LocalDomains {
		sub := strings.HasPrefix(d, ".")
		a, err := addr.DomainASCII(strings.TrimPrefix(d, "."))
		if err != nil || !strings.Contains(a, ".") && !sub && a != "localhost" {
			return cfg, sec.Errorf("local_domains", "%q is not a domain name", d)
		}
		if sub {
			a = "." + a
		}
		cfg.LocalDomains[i] = a
	}
	return cfg, nil
}

// Check is the correspondents check.
type Check struct {
	cfg    Config
	st     store.Correspondents
	w      *writer
	log    *slog.Logger
	now    func() time.Time
	locals map[string]bool // "example.org" and ".example.org"

	mu        sync.Mutex
	downUntil time.Time // lookups are not asked of the store before this time (circuit breaker)
}

// storeBackoff is how long lookups leave the store alone after it failed: while Redis hangs, each RCPT would
// otherwise wait redis_timeout.
const storeBackoff = 5 * time.Second

// lookup asks the store which keys are live for user, through a circuit breaker: after a failure the store
// is left alone for storeBackoff (the failure is logged once), and the message is treated as from a stranger.
func (c *Check) lookup(ctx context.Context, user string, keys []string, now time.Time) ([]bool, error) {
	c.mu.Lock()
	until := c.downUntil
	c.mu.Unlock()
	if now.Before(until) {
		return nil, fmt.Errorf("correspondents: store skipped after a recent failure (until %s)", until.UTC().Format(time.RFC3339))
	}
	hit, err := c.st.LookupCorrespondents(ctx, user, keys, now)
	if err != nil && ctx.Err() == nil {
		c.mu.Lock()
		if !now.Before(c.downUntil) {
			c.log.Warn("correspondents: the store failed; not asking it again for a while", "backoff", storeBackoff, "err", err)
		}
		c.downUntil = now.Add(storeBackoff)
		c.mu.Unlock()
	}
	return hit, err
}

func setup(sec *config.Section, env *policy.Env) (policy.Check, error) {
	cfg, err := DecodeConfig(sec)
	if err != nil {
		return nil, err
	}
	st, err := env.Store()
	if err != nil {
		return nil, err
	}
	cs, err := store.CorrespondentsOf(st)
	if err != nil {
		return nil, err
	}
	return New(cfg, cs, env.Logger, clock), nil
}

// New returns a check over a store and starts its writer; Close stops it. now is the clock.
func New(cfg Config, st store.Correspondents, log *slog.Logger, now func() time.Time) *Check {
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	c := &Check{cfg: cfg, st: st, log: log, now: now, locals: map[string]bool{}}
	for _, d := range cfg.LocalDomains {
		c.locals[d] = true
	}
	c.w = startWriter(st, cfg.QueueSize, log)
	return c
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// Kind implements policy.Check: the score is an anti-spam verdict (a white-listed message needs none).
func (c *Check) Kind() policy.Kind { return policy.KindAntispam }

// HeaderOnly implements policy.HeaderOnly: the check reads the header block and other checks' facts.
func (c *Check) HeaderOnly() bool { return true }

// Close implements policy.Closer: the queued records are written before the store closes.
func (c *Check) Close() error { return c.w.close(10 * time.Second) }

// Flush waits until every record queued so far is written (or ctx ends); for tests and `moat scan`.
func (c *Check) Flush(ctx context.Context) error { return c.w.flush(ctx) }

// Local reports whether a domain is one of the local domains.
func (c *Check) Local(domain string) bool {
	d := addr.Domain(domain)
	if c.locals[d] {
		return true
	}
	for {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return false
		}
		if c.locals[d[i:]] {
			return true
		}
		d = d[i+1:]
	}
}

// UserKey is the store's name of a local user's correspondents (addresses and domains), RepliesKey that of
// the Message-IDs the user sent: hashes of the lower-cased address. Message-IDs have a set (and a bound) of
// their own, so that a user who sends much mail to few people does not push those people out.
func UserKey(user string) string    { return hashOf("u", strings.ToLower(user)) }
func RepliesKey(user string) string { return hashOf("r", strings.ToLower(user)) }

// AddressKey, DomainKey and ReplyKey are the store's keys of a correspondent's address, a domain and a
// Message-ID (with or without angle brackets) sent to a correspondent; the first letter says which.
func AddressKey(a string) string { return "a" + hashOf("a", strings.ToLower(a)) }
func DomainKey(d string) string  { return "d" + hashOf("d", addr.Domain(d)) }

// ReplyKey binds a Message-ID to the remote address it was sent to: the hash of both, so that only a reply
// from that address matches, then a tag of the address (ReplyTag) so that forgetting the address can find
// its Message-IDs without storing either in clear.
func ReplyKey(id, to string) string {
	id = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(id), "<"), ">")
	return "m" + hashOf("m", id+"\x00"+strings.ToLower(to)) + ReplyTag(to)
}

// ReplyTag is how every ReplyKey of an address ends.
func ReplyTag(to string) string { return "." + AddressKey(to)[1:17] }

// KeyKind names the kind of a stored key: address, domain or reply.
func KeyKind(k string) string {
	switch {
	case strings.HasPrefix(k, "a"):
		return MatchAddress
	case strings.HasPrefix(k, "d"):
		return MatchDomain
	case strings.HasPrefix(k, "m"):
		return MatchReply
	}
	return "unknown"
}

func hashOf(kind, v string) string {
	h := sha256.Sum256([]byte("moat-correspondents\x00" + kind + "\x00" + v))
	return hex.EncodeToString(h[:16])
}

func addrString(a addr.Address) string { return a.Local + "@" + a.CanonDomain() }

// Rcpt implements policy.RcptChecker: a recipient that wrote to the proven sender is marked a correspondent.
func (c *Check) Rcpt(ctx context.Context, s *policy.Session, r *policy.Recipient) []policy.Finding {
	x, ok := c.remoteSender(s)
	if !ok || !c.Local(r.Addr.Domain) {
		return []policy.Finding{{Status: policy.StatusSkipped, Reason: "not-inbound"}}
	}
	keys := []string{AddressKey(addrString(x))}
	if c.cfg.Domains {
		keys = append(keys, DomainKey(x.Domain))
	}
	hit, err := c.lookup(ctx, UserKey(addrString(r.Addr)), keys, c.now())
	if err != nil {
		// Nothing changes: the recipient is greylisted like anybody else.
		return []policy.Finding{{Status: policy.StatusTempError, Reason: "store-error", Err: err}}
	}
	match := ""
	switch {
	case hit[0]:
		match = MatchAddress
	case len(hit) > 1 && hit[1]:
		match = MatchDomain
	default:
		return []policy.Finding{{Status: StatusNotMatched}}
	}
	if !spfProves(s, x) {
		return []policy.Finding{{Status: StatusUnproven, Reason: "unproven-" + c.spfWhy(s),
			Detail: "match=" + match + " without SPF pass for " + x.Domain}}
	}
	return []policy.Finding{{Status: policy.StatusPass, Reason: "correspondent", Correspondent: true,
		Detail: "match=" + match + " proof=spf"}}
}

// remoteSender returns the envelope sender of an inbound message from a remote sender.
func (c *Check) remoteSender(s *policy.Session) (addr.Address, bool) {
	x := s.From
	if s.Trusted() || x.Null() || x.Domain == "" || strings.HasPrefix(x.Domain, "[") || c.Local(x.Domain) {
		return x, false
	}
	return x, true
}

func spfProves(s *policy.Session, x addr.Address) bool {
	return proof.SPF(s.Get(policy.FactSPFResult), s.Get(policy.FactSPFDomain), x.CanonDomain())
}

func (c *Check) spfWhy(s *policy.Session) string {
	res := s.Get(policy.FactSPFResult)
	if res == "" {
		res = "none"
	}
	return "spf-" + res
}

// dkimProves reports whether a DKIM signature of a domain aligned with X's domain verified.
func dkimProves(s *policy.Session, x addr.Address) bool {
	_, ok := proof.DKIM(s.Get(policy.FactDKIMPassDomains), x.CanonDomain())
	return ok
}

// Message implements policy.MessageChecker: outbound mail is recorded, inbound mail is matched and scored.
func (c *Check) Message(ctx context.Context, s *policy.Session, _ policy.Message) []policy.Finding {
	if s.Trusted() {
		return c.record(s)
	}
	x, ok := c.remoteSender(s)
	if !ok {
		return []policy.Finding{{Status: policy.StatusSkipped, Reason: "not-inbound"}}
	}
	var replies []string
	for _, id := range messageIDs(append(s.HeaderValues("In-Reply-To"), s.HeaderValues("References")...)) {
		replies = append(replies, ReplyKey(id, addrString(x)))
	}
	if len(replies) > maxReferences {
		replies = replies[len(replies)-maxReferences:]
	}
	keys := []string{AddressKey(addrString(x))}
	if c.cfg.Domains {
		keys = append(keys, DomainKey(x.Domain))
	}
	now := c.now()
	weakest, n := "", 0
	var refresh []store.CorrRecord
	for _, r := range s.AcceptedRcpts() {
		if !c.Local(r.Addr.Domain) {
			continue
		}
		n++
		user := addrString(r.Addr)
		hit, err := c.lookup(ctx, UserKey(user), keys, now)
		if err != nil {
			return []policy.Finding{{Status: policy.StatusTempError, Reason: "store-error", Err: err}}
		}
		replyHit := make([]bool, len(replies))
		if !hit[0] && len(replies) > 0 {
			if replyHit, err = c.lookup(ctx, RepliesKey(user), replies, now); err != nil {
				return []policy.Finding{{Status: policy.StatusTempError, Reason: "store-error", Err: err}}
			}
		}
		m := ""
		switch {
		case hit[0]:
			m = MatchAddress
		case anyTrue(replyHit):
			m = MatchReply
		case len(hit) > 1 && hit[1]:
			m = MatchDomain
		default:
			return []policy.Finding{{Status: StatusNotMatched, Detail: "rcpt=" + r.Addr.String() + " never wrote to the sender"}}
		}
		if weakest == "" || m == MatchDomain || (m == MatchReply && weakest == MatchAddress) {
			weakest = m
		}
		// Refreshed on use: the keys that matched live on; a reply or domain match is not turned into more.
		refresh = append(refresh, c.rec(UserKey(user), pick(keys, hit), now), c.rec(RepliesKey(user), pick(replies, replyHit), now))
	}
	if n == 0 {
		return []policy.Finding{{Status: policy.StatusSkipped, Reason: "no-local-recipient"}}
	}
	proof := ""
	switch {
	case spfProves(s, x):
		proof = "spf"
	case dkimProves(s, x):
		proof = "dkim"
	default:
		why := "unproven-" + c.spfWhy(s) + "-no-aligned-dkim"
		s.Set(policy.FactCorrespondent, why)
		return []policy.Finding{{Status: StatusUnproven, Reason: why,
			Detail: "match=" + weakest + ": neither SPF pass nor an aligned DKIM pass for " + x.Domain}}
	}
	score := c.cfg.Score
	if weakest == MatchDomain {
		score = c.cfg.DomainScore
	}
	if !s.ReadOnly {
		c.w.enqueue(refresh)
	}
	f := policy.Finding{Status: policy.StatusPass, Reason: "correspondent", Score: score, Scored: true,
		Tests: []string{Test}, Detail: fmt.Sprintf("match=%s proof=%s", weakest, proof)}
	fact := "yes"
	if policy.InDryRun(ctx) {
		// The engine only neutralises verdicts; a score would still count.
		f.Score, f.Scored, f.Tests = 0, false, nil
		f.Detail += fmt.Sprintf(" dry-run: score %.1f not given", score)
		fact = "yes-dry-run"
	}
	s.Set(policy.FactCorrespondent, fact)
	return []policy.Finding{f}
}

// rec is a record of keys for one of the store's users, expiring after expiry.
func (c *Check) rec(user string, keys []string, now time.Time) store.CorrRecord {
	return store.CorrRecord{User: user, Keys: keys, Now: now, Expiry: c.cfg.Expiry.D(), Max: c.cfg.MaxPerUser}
}

// pick returns the keys whose hit is true.
func pick(keys []string, hit []bool) []string {
	var out []string
	for i, h := range hit {
		if h {
			out = append(out, keys[i])
		}
	}
	return out
}

// lastN returns the last n of keys.
func lastN(keys []string, n int) []string {
	if len(keys) > n {
		return keys[len(keys)-n:]
	}
	return keys
}

func anyTrue(bs []bool) bool {
	for _, b := range bs {
		if b {
			return true
		}
	}
	return false
}

// record queues the keys of an outbound message: the remote recipients and their domains for the local
// sender, and the Message-ID bound to each remote recipient in the sender's set of replies, both in one queue
// entry (one store write).
func (c *Check) record(s *policy.Session) []policy.Finding {
	from := s.From
	if from.Null() || !c.Local(from.Domain) {
		return []policy.Finding{{Status: policy.StatusSkipped, Reason: "sender-not-local"}}
	}
	ids := messageIDs(s.HeaderValues("Message-ID"))
	var keys, replies []string
	seen := map[string]bool{}
	add := func(list *[]string, k string) {
		if !seen[k] {
			seen[k] = true
			*list = append(*list, k)
		}
	}
	for _, r := range s.AcceptedRcpts() {
		if r.Addr.Domain == "" || strings.HasPrefix(r.Addr.Domain, "[") || c.Local(r.Addr.Domain) {
			continue
		}
		to := addrString(r.Addr)
		add(&keys, AddressKey(to))
		add(&keys, DomainKey(r.Addr.Domain))
		if len(ids) > 0 {
			add(&replies, ReplyKey(ids[0], to))
		}
	}
	if len(keys) == 0 {
		return []policy.Finding{{Status: policy.StatusSkipped, Reason: "no-remote-recipient"}}
	}
	// A blast beyond the bound keeps only its last max_per_user keys; writing more would only churn.
	keys, replies = lastN(keys, c.cfg.MaxPerUser), lastN(replies, c.cfg.MaxPerUser)
	now, user := c.now(), addrString(from)
	recs := []store.CorrRecord{c.rec(UserKey(user), keys, now), c.rec(RepliesKey(user), replies, now)}
	n := len(keys) + len(replies)
	if s.ReadOnly {
		return []policy.Finding{{Status: StatusRecorded, Detail: fmt.Sprintf("keys=%d read-only: not recorded", n)}}
	}
	if !c.w.enqueue(recs) {
		return []policy.Finding{{Status: policy.StatusTempError, Reason: "queue-full",
			Detail: fmt.Sprintf("keys=%d not recorded: the writer is behind", n)}}
	}
	return []policy.Finding{{Status: StatusRecorded, Detail: fmt.Sprintf("keys=%d", n)}}
}

// messageIDs returns the msg-ids (RFC 5322 section 3.6.4) named in header values, in order, without angle
// brackets; anything outside angle brackets (comments, phrases of old mailers) is ignored.
func messageIDs(values []string) []string {
	var out []string
	for _, v := range values {
		for {
			i := strings.IndexByte(v, '<')
			if i < 0 {
				break
			}
			j := strings.IndexByte(v[i:], '>')
			if j < 0 {
				break
			}
			if id := strings.TrimSpace(v[i+1 : i+j]); id != "" && len(id) <= 998 {
				out = append(out, id)
			}
			v = v[i+j+1:]
		}
	}
	return out
}
