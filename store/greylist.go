package store

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Triplet identifies a greylisting record: who sends (the client network or, with SPF, the sender's domain),
// the normalised envelope sender and the recipient. The store keeps the parts as given; normalising them is
// the caller's business.
type Triplet struct {
	Client string // e.g. "192.0.2.0/24", "2001:db8::/64" or "spf:example.com"
	Sender string // normalised envelope sender; "<>@helo" for the null sender
	Rcpt   string // recipient, lower case
}

// ID is the triplet's stable identifier: 32 hex digits of SHA-256 over the three parts.
func (t Triplet) ID() string {
	h := sha256.New()
	h.Write([]byte(t.Client))
	h.Write([]byte{0})
	h.Write([]byte(t.Sender))
	h.Write([]byte{0})
	h.Write([]byte(t.Rcpt))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// GreyState is the state of a triplet.
type GreyState string

// Triplet states.
const (
	GreyPending GreyState = "pending" // seen, not yet retried after the delay
	GreyPassed  GreyState = "passed"  // retried in time (or released); delivered until it expires
)

// GreyEntry is one stored triplet.
type GreyEntry struct {
	ID string
	Triplet
	IP, Helo  string // of the latest attempt, for operators
	State     GreyState
	FirstSeen time.Time // first attempt
	LastSeen  time.Time // latest attempt
	PassedAt  time.Time // when it passed (zero while pending)
	Attempts  int       // attempts counted while pending, the first included
	Passes    int       // messages let through after it passed (0 right after a release)
	Expires   time.Time // pending: first attempt + window; passed: latest pass + expiry
}

// ClientEntry is the auto-whitelist record of one client key.
type ClientEntry struct {
	Client    string
	Count     int       // triplets that passed, counting at most one per interval
	LastCount time.Time // when Count last went up
	LastSeen  time.Time
	Expires   time.Time
}

// GreyParams are the greylisting timings.
type GreyParams struct {
	Delay  time.Duration // a retry passes once this long after the first attempt
	Window time.Duration // a pending triplet is forgotten this long after the first attempt
	Expiry time.Duration // a passed triplet (or white-listed client) is forgotten after this long without traffic
	// AutoWhitelist is the number of passes after which a client key is no longer greylisted; 0 turns
	// auto-whitelisting off.
	AutoWhitelist int
	// AutoWhitelistInterval: passes of one client count at most once per interval.
	AutoWhitelistInterval time.Duration
}

// GreyRequest asks for one greylisting decision.
type GreyRequest struct {
	Triplet
	IP, Helo string // recorded for operators
	// Network is the client's network ("192.0.2.0/24"). When Client is another key ("spf:example.com"),
	// auto-whitelisting checks and counts the network too; empty or equal to Client: only Client.
	Network string
	Now     time.Time
	Params  GreyParams
	// ReadOnly computes the decision without changing anything (moat scan).
	ReadOnly bool
	// DeferPass records a refusal (a new or early attempt) as usual but leaves the state unchanged when the
	// decision is a pass: the caller records the pass with the same request without DeferPass once the
	// message is accepted, so that a message refused later (virus, spam) neither passes the triplet nor
	// counts towards auto-whitelisting.
	DeferPass bool
}

// GreyOutcome is the result of a decision.
type GreyOutcome string

// Outcomes. New and Early ask the client to retry; the others let the message through.
const (
	GreyNew         GreyOutcome = "new"         // first attempt: a pending record was created
	GreyEarly       GreyOutcome = "early"       // retried before the delay was over
	GreyFirstPass   GreyOutcome = "passed"      // retried after the delay and inside the window: passes now
	GreyKnown       GreyOutcome = "known"       // the triplet passed before
	GreyWhitelisted GreyOutcome = "whitelisted" // the client key is auto-white-listed
)

// GreyResult is a decision.
type GreyResult struct {
	Outcome GreyOutcome
	Entry   GreyEntry     // the triplet after the decision (zero for GreyWhitelisted)
	Wait    time.Duration // New, Early: how long until a retry passes
	Delayed time.Duration // FirstPass: how long the triplet was held up
	// ClientCount is the highest count of passes of the request's client keys (Client and Network) after
	// the decision (when auto-whitelisting is on).
	ClientCount int
}

// Pass reports whether the message may go through.
func (r GreyResult) Pass() bool {
	return r.Outcome == GreyFirstPass || r.Outcome == GreyKnown || r.Outcome == GreyWhitelisted
}

// networkKey returns the second auto-whitelist key of a request: its network when that differs from the
// client key (the client key is "spf:DOMAIN"), or "" when there is none.
func (r GreyRequest) networkKey() string {
	if r.Network == r.Client {
		return ""
	}
	return r.Network
}

// decide is the greylisting state machine, shared by the SQLite backend (which runs it inside a write
// transaction) and mirrored step by step in the Redis backend's Lua script. rec is the stored triplet, cl the
// auto-whitelist record of the client key and ncl that of the network key (when the request has one); nil
// when absent. The returned records are what to write (nil: leave unchanged).
//
// Auto-whitelisting looks at both client keys: a network that passed N triplets stays white-listed when its
// senders start passing SPF (and the client key becomes "spf:DOMAIN"), and an SPF domain that passed N
// triplets stays white-listed whatever address its provider sends from. A passing triplet counts for both.
func decide(rec *GreyEntry, cl, ncl *ClientEntry, req GreyRequest) (newRec *GreyEntry, newCl, newNCl *ClientEntry, res GreyResult) {
	now, p := req.Now, req.Params
	live := func(c *ClientEntry) *ClientEntry {
		if c != nil && !now.Before(c.Expires) {
			return nil
		}
		return c
	}
	cl = live(cl)
	if req.networkKey() == "" {
		ncl = nil
	}
	ncl = live(ncl)
	if rec != nil && !now.Before(rec.Expires) {
		rec = nil
	}
	listed := func(c *ClientEntry) bool { return p.AutoWhitelist > 0 && c != nil && c.Count >= p.AutoWhitelist }
	if listed(cl) || listed(ncl) {
		res = GreyResult{Outcome: GreyWhitelisted}
		newCl, newNCl = touchClient(cl, req, &res), touchClient(ncl, req, &res)
		return nil, newCl, newNCl, res
	}
	e, outcome := advanceTriplet(rec, req)
	res.Outcome = outcome
	switch res.Outcome {
	case GreyNew, GreyEarly:
		res.Wait = e.FirstSeen.Add(p.Delay).Sub(now)
	case GreyFirstPass:
		res.Delayed = now.Sub(e.FirstSeen)
	}
	if res.Pass() && p.AutoWhitelist > 0 {
		newCl = countClient(cl, req.Client, res.Outcome, req)
		res.ClientCount = newCl.Count
		if nk := req.networkKey(); nk != "" {
			newNCl = countClient(ncl, nk, res.Outcome, req)
			res.ClientCount = max(res.ClientCount, newNCl.Count)
		}
	} else {
		if cl != nil {
			res.ClientCount = cl.Count
		}
		if ncl != nil {
			res.ClientCount = max(res.ClientCount, ncl.Count)
		}
	}
	res.Entry = e
	return &e, newCl, newNCl, res
}

// touchClient keeps an auto-whitelisted client's record alive (nil stays nil) and raises res.ClientCount to
// its count.
func touchClient(c *ClientEntry, req GreyRequest, res *GreyResult) *ClientEntry {
	if c == nil {
		return nil
	}
	n := *c
	n.LastSeen, n.Expires = req.Now, req.Now.Add(req.Params.Expiry)
	res.ClientCount = max(res.ClientCount, n.Count)
	return &n
}

// advanceTriplet moves the triplet's live record rec (nil: none) on by one attempt and says what the attempt
// is: new, early, first pass or known.
func advanceTriplet(rec *GreyEntry, req GreyRequest) (GreyEntry, GreyOutcome) {
	now, p := req.Now, req.Params
	var e GreyEntry
	var outcome GreyOutcome
	if rec == nil {
		e = GreyEntry{ID: req.ID(), Triplet: req.Triplet, State: GreyPending, FirstSeen: now, Attempts: 1,
			Expires: now.Add(p.Window)}
		outcome = GreyNew
	} else {
		e = *rec
		switch {
		case e.State == GreyPending && now.Before(e.FirstSeen.Add(p.Delay)):
			e.Attempts++
			outcome = GreyEarly
		case e.State == GreyPending:
			e.Attempts++
			e.State, e.PassedAt, e.Passes = GreyPassed, now, 1
			e.Expires = now.Add(p.Expiry)
			outcome = GreyFirstPass
		case e.Passes == 0: // released by an operator: this is the first message through
			e.Passes = 1
			e.Expires = now.Add(p.Expiry)
			outcome = GreyFirstPass
		default:
			e.Passes++
			e.Expires = now.Add(p.Expiry)
			outcome = GreyKnown
		}
	}
	e.LastSeen, e.IP, e.Helo = now, req.IP, req.Helo
	return e, outcome
}

// countClient returns the auto-whitelist record of the client (or network) key after a passing attempt:
// created if missing, its count raised when a triplet passes for the first time.
func countClient(cl *ClientEntry, key string, outcome GreyOutcome, req GreyRequest) *ClientEntry {
	now, p := req.Now, req.Params
	var c ClientEntry
	if cl == nil {
		c = ClientEntry{Client: key, Count: 1, LastCount: now}
		if outcome != GreyFirstPass {
			c.Count, c.LastCount = 0, time.Time{}
		}
	} else {
		c = *cl
		// Only a triplet passing for the first time counts (N different triplets); a known one keeps the
		// record alive.
		if outcome == GreyFirstPass && !now.Before(c.LastCount.Add(p.AutoWhitelistInterval)) {
			c.Count++
			c.LastCount = now
		}
	}
	c.LastSeen, c.Expires = now, now.Add(p.Expiry)
	return &c
}

// greyRefresh is how long a passed triplet's record (and a client's auto-whitelist record) may go without
// being rewritten for a pass that changes nothing but its last-seen time, pass count and expiry. A busy
// triplet then costs one write every few minutes instead of one per message; its expiry (days) and pass
// count lag by at most that much.
const greyRefresh = 5 * time.Minute

// refreshDue reports whether the triplet's stored record old must be rewritten as new after a pass: it
// changed in more than the counters and times a known pass moves, or its last write is greyRefresh old.
func refreshDue(old, new *GreyEntry, now time.Time) bool {
	if new == nil {
		return false
	}
	if old == nil || old.State != new.State || old.Attempts != new.Attempts || old.IP != new.IP ||
		old.Helo != new.Helo || (old.Passes == 0) != (new.Passes == 0) {
		return true
	}
	return now.Sub(old.LastSeen) >= greyRefresh || now.Before(old.LastSeen)
}

// clientRefreshDue is refreshDue for an auto-whitelist record: a count that moved is always written.
func clientRefreshDue(old, new *ClientEntry, now time.Time) bool {
	if new == nil {
		return false
	}
	if old == nil || old.Count != new.Count || !old.LastCount.Equal(new.LastCount) {
		return true
	}
	return now.Sub(old.LastSeen) >= greyRefresh || now.Before(old.LastSeen)
}

// finishResult fills Wait and Delayed from an entry, for backends that compute the state elsewhere.
func finishResult(res *GreyResult, req GreyRequest) {
	switch res.Outcome {
	case GreyNew, GreyEarly:
		res.Wait = res.Entry.FirstSeen.Add(req.Params.Delay).Sub(req.Now)
	case GreyFirstPass:
		res.Delayed = req.Now.Sub(res.Entry.FirstSeen)
	}
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}
