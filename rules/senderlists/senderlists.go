// Package senderlists implements sender black and white lists, global and per recipient.
//
// # Entries
//
// One entry a line, '#' starts a comment:
//
//	friend@example.com            an address (compared case-insensitively)
//	example.org                   a domain
//	.example.net                  a domain and all its subdomains
//	192.0.2.0/24                  the client's IP address or network
//	2001:db8::1
//	*@*%%%%*.example              a pattern in the barring language (see rules/barring)
//	<> proof=none                 the null sender (a white-list entry must say proof=none)
//	partner.example proof=dkim    a white-list entry with the proof it needs
//
// # Proof
//
// An envelope sender is easy to forge, so a white-list entry may require proof before it wins: proof=spf (SPF
// passed for the sender's domain or a parent of it), proof=dkim (a valid DKIM signature whose d= domain is
// aligned with the sender's domain), proof=dmarc (the From: header domain is aligned with the sender's
// domain, and SPF or DKIM passed aligned with that From: domain: DMARC relaxed alignment, RFC 7489 section
// 3.1, computed here without looking up the published DMARC policy), a comma list of these, "any" (one of the
// three) or "none". Domain and pattern entries default to default_domain_proof ("any"), address entries to
// default_address_proof ("none"); IP entries need no proof.
//
// An entry none of whose proofs an enabled check can give ([checks.spf] gives spf, [checks.dkim] gives dkim,
// either gives dmarc) is refused at setup: it could never win. "<>" on a white list must say proof=none.
//
// SPF is known at RCPT time. DKIM and the From: header are only known at end of message: an entry that needs
// them is decided then, for the whole message.
//
// # Decisions
//
// The check runs at RCPT time, after the sender's SPF check, and sees the recipient's own lists as well as the
// global ones. A sender on both lists is white-listed. A proven white-list hit is a Whitelist finding: the
// engine then skips greylisting, DNSBL, rDNS, SPF-based rejection and spam scoring, never virus scanning. A
// black-list hit is refused with 550 5.7.1; when a white-list entry that waits for DKIM also matched, the
// refusal waits for the end of the message and happens only if the proof fails.
//
// Every white-list entry that won is named in the message's X-Moat-Senderlist header (the header name is
// configurable) with its file and line and the proof that held.
package senderlists

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/lists"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/store"
)

// Name is the check's registered name.
const Name = "senderlists"

// Reasons.
const (
	ReasonWhitelist = "whitelist"
	ReasonBlacklist = "blacklist"
)

func init() { policy.Register(Name, setup) }

// Lists is a pair of black and white lists, inline and from files.
type Lists struct {
	Whitelist     []string `toml:"whitelist"`
	WhitelistFile string   `toml:"whitelist_file"`
	Blacklist     []string `toml:"blacklist"`
	BlacklistFile string   `toml:"blacklist_file"`
}

// Config is the [checks.senderlists] table.
type Config struct {
	Whitelist     []string `toml:"whitelist"`
	WhitelistFile string   `toml:"whitelist_file"`
	Blacklist     []string `toml:"blacklist"`
	BlacklistFile string   `toml:"blacklist_file"`
	// DefaultDomainProof is the proof domain and pattern entries need: "any" (default), "none", or a comma
	// list of spf, dkim, dmarc.
	DefaultDomainProof string `toml:"default_domain_proof"`
	// DefaultAddressProof is the proof address entries need (default "none").
	DefaultAddressProof string `toml:"default_address_proof"`
	// BlacklistText is the reply text after "550 5.7.1"; "{addr}" is replaced by the sender.
	BlacklistText string `toml:"blacklist_text"`
	// Header names the header that records the white-list entry that matched; "" turns it off.
	Header string `toml:"header"`
	// Recipient holds per-recipient lists, keyed by recipient address or domain:
	// [checks.senderlists.recipient."boss@example.com"].
	Recipient map[string]Lists `toml:"recipient"`
	// Learned consults the store's learned white list (senders a person vouched for when releasing their
	// message from the quarantine).
	Learned bool `toml:"learned"`
	// LearnedRequireProof counts a learned sender only with SPF pass for its domain or an aligned DKIM pass.
	LearnedRequireProof bool `toml:"learned_require_proof"`
}

// DefaultConfig returns the defaults of the table.
func DefaultConfig() Config {
	return Config{
		DefaultDomainProof:  "any",
		DefaultAddressProof: "none",
		BlacklistText:       "<{addr}>: sender rejected by local policy",
		Header:              "X-Moat-Senderlist",
		Learned:             false,
		LearnedRequireProof: true,
	}
}

type pair struct{ white, black *List }

// Check is the senderlists check.
type Check struct {
	provable Proof // the proofs the enabled checks can give
	global   pair
	perRcpt  map[string]pair // recipient address key or domain
	text     string
	header   string
	defaults defaults

	learnedStore        store.LearnedSenders // nil: learned = false
	learnedRequireProof bool
}

func setup(sec *config.Section, env *policy.Env) (policy.Check, error) {
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return nil, err
	}
	ls, err := openLearned(env, cfg.Learned)
	if err != nil {
		return nil, sec.Errorf("learned", "%v", err)
	}
	c, err := New(sec, cfg, ls)
	if err != nil {
		return nil, err
	}
	if !c.NeedsEOM() {
		// Without the header and without end-of-message proofs the check has nothing to do at end of message;
		// a type without the Message method keeps the milter from asking the MTA for the body on its account.
		return rcptOnly{c}, nil
	}
	return c, nil
}

// rcptOnly is the check without its end-of-message stage.
type rcptOnly struct{ c *Check }

func (r rcptOnly) Name() string      { return Name }
func (r rcptOnly) Kind() policy.Kind { return policy.KindAccess }
func (r rcptOnly) Rcpt(ctx context.Context, s *policy.Session, rc *policy.Recipient) []policy.Finding {
	return r.c.Rcpt(ctx, s, rc)
}

// NeedsEOM reports whether the check has work at end of message: writing its header, or deciding white-list
// entries that need DKIM or DMARC proof.
func (c *Check) NeedsEOM() bool {
	if c.header != "" || c.learnedStore != nil && c.learnedRequireProof {
		return true
	}
	lists := []*List{c.global.white}
	for _, p := range c.perRcpt {
		lists = append(lists, p.white)
	}
	for _, l := range lists {
		for _, e := range l.entries {
			if e.Proof&(ProofDKIM|ProofDMARC) != 0 {
				return true
			}
		}
	}
	return false
}

// New builds the check from a decoded configuration and the learned white list (nil when learned = false);
// sec locates errors.
func New(sec *config.Section, cfg Config, learned store.LearnedSenders) (*Check, error) {
	c := &Check{perRcpt: map[string]pair{}, text: cfg.BlacklistText, header: cfg.Header, provable: provable(sec.File()),
		learnedStore: learned, learnedRequireProof: cfg.LearnedRequireProof}
	if learned != nil && cfg.LearnedRequireProof && c.provable&(ProofSPF|ProofDKIM) == 0 {
		return nil, sec.Errorf("learned_require_proof", "%v: learned senders need SPF or DKIM proof, but neither [checks.spf] nor [checks.dkim] is enabled", ErrUnprovable)
	}
	var err error
	if c.defaults.domain, err = ParseProof(cfg.DefaultDomainProof); err != nil {
		return nil, sec.Errorf("default_domain_proof", "%v", err)
	}
	if c.defaults.address, err = ParseProof(cfg.DefaultAddressProof); err != nil {
		return nil, sec.Errorf("default_address_proof", "%v", err)
	}
	if strings.TrimSpace(cfg.BlacklistText) == "" || strings.ContainsAny(cfg.BlacklistText, "\r\n") {
		return nil, sec.Errorf("blacklist_text", "must be one non-empty line")
	}
	if cfg.Header != "" && !validHeaderName(cfg.Header) {
		return nil, sec.Errorf("header", "%q is not a valid header name", cfg.Header)
	}
	if c.global, err = c.load(sec, Lists{cfg.Whitelist, cfg.WhitelistFile, cfg.Blacklist, cfg.BlacklistFile}); err != nil {
		return nil, err
	}
	n := c.global.white.Len() + c.global.black.Len()
	rsec := sec.Sub("recipient")
	keys := make([]string, 0, len(cfg.Recipient))
	for k := range cfg.Recipient {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tables := map[string]string{} // normalized key -> the table's key as written
	for _, k := range keys {
		sub := rsec.Sub(k)
		key, err := recipientKey(k)
		if err != nil {
			return nil, sub.Errorf("", "%v", err)
		}
		if prev, ok := tables[key]; ok {
			// Keys compare case-insensitively (and international domains in A-label form): two tables for the
			// same recipient would silently replace each other.
			return nil, sub.Errorf("", "%v: recipient %q is the same as %q (line %d); merge the two tables",
				ErrDuplicate, k, prev, sec.File().LineOf(rsec.Sub(prev).Path()))
		}
		tables[key] = k
		p, err := c.load(sub, cfg.Recipient[k])
		if err != nil {
			return nil, err
		}
		c.perRcpt[key] = p
		n += p.white.Len() + p.black.Len()
	}
	if n == 0 && learned == nil {
		return nil, sec.Errorf("", "no entries: set whitelist, blacklist, their _file keys, or recipient tables")
	}
	return c, nil
}

func (c *Check) load(sec *config.Section, l Lists) (pair, error) {
	p := pair{white: &List{}, black: &List{}}
	for _, x := range []struct {
		key, fileKey string
		inline       []string
		file         string
		white        bool
		into         *List
	}{
		{"whitelist", "whitelist_file", l.Whitelist, l.WhitelistFile, true, p.white},
		{"blacklist", "blacklist_file", l.Blacklist, l.BlacklistFile, false, p.black},
	} {
		err := lists.Load(sec, x.key, x.inline, x.fileKey, x.file, func(lines []config.ListLine) error {
			more, err := parseList(lines, x.white, c.defaults)
			if err != nil {
				return err
			}
			if x.white {
				for _, e := range more.entries {
					if err := c.checkProvable(e); err != nil {
						return err
					}
				}
			}
			for _, e := range more.entries {
				x.into.add(e)
			}
			return nil
		})
		if err != nil {
			return p, err
		}
	}
	return p, nil
}

// Setup errors.
var (
	ErrDuplicate  = errors.New("senderlists: duplicate recipient table")
	ErrUnprovable = errors.New("senderlists: proof no enabled check can give")
)

// provable returns the proofs the configuration's enabled checks can give: SPF needs [checks.spf], DKIM needs
// [checks.dkim], DMARC alignment needs either of them.
func provable(f *config.File) Proof {
	var p Proof
	if checkEnabled(f, "spf") {
		p |= ProofSPF | ProofDMARC
	}
	if checkEnabled(f, "dkim") {
		p |= ProofDKIM | ProofDMARC
	}
	return p
}

// checkEnabled reports whether [checks.NAME] is present and not enabled = false, as policy.Build decides.
func checkEnabled(f *config.File, name string) bool {
	sec := f.Section("checks." + name)
	if !sec.Present() {
		return false
	}
	v := struct {
		Enabled bool `toml:"enabled"`
	}{true}
	if err := sec.Pick("enabled").Decode(&v); err != nil {
		return false
	}
	return v.Enabled
}

// checkProvable refuses a white-list entry whose proof no enabled check can give: it could never win, and
// every message it matches would wait for proof in vain.
func (c *Check) checkProvable(e *Entry) error {
	if e.Proof == ProofNone || e.Proof&c.provable != 0 {
		return nil
	}
	from := "proof=" + e.Proof.String()
	if !e.proofSet {
		from = "proof " + e.Proof.String() + " from default_domain_proof"
		if e.kind == kindAddress {
			from = "proof " + e.Proof.String() + " from default_address_proof"
		}
	}
	return &lists.LineError{Line: e.Line, Err: fmt.Errorf("%w: %s, but no enabled check gives it ([checks.spf] gives spf, [checks.dkim] gives dkim, either gives dmarc): the entry could never win; enable the check or write proof=none",
		ErrUnprovable, from)}
}

// recipientKey normalizes the key of a per-recipient table: an address or a domain.
func recipientKey(k string) (string, error) {
	if strings.Contains(k, "@") {
		a, err := addr.Parse(k)
		if err != nil || a.Null() || a.Domain == "" {
			return "", fmt.Errorf("%w: recipient %q is not an address or a domain", ErrBadEntry, k)
		}
		return addressKey(a), nil
	}
	d := lists.NewDomains()
	if err := d.Add(k); err != nil || strings.HasPrefix(k, ".") {
		return "", fmt.Errorf("%w: recipient %q is not an address or a domain", ErrBadEntry, k)
	}
	return addr.Domain(k), nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// Kind implements policy.Check: the lists always run, so that white-listing is known before any anti-spam
// check.
func (c *Check) Kind() policy.Kind { return policy.KindAccess }

// OwnedHeaders implements policy.HeaderOwner: incoming copies of the header are removed.
func (c *Check) OwnedHeaders() []string {
	if c.header == "" {
		return nil
	}
	return []string{c.header}
}

// outcome is the lists' answer for one sender and recipient.
type outcome struct {
	white   *Entry // the white-list entry that won
	how     string // the proof that held
	pending *Entry // a white-list entry waiting for end-of-message proof
	black   *Entry // the first black-list entry that matched
	// unprovenLearned: the sender is on the learned white list without the proof it needs.
	unprovenLearned bool
}

func (c *Check) decide(s *policy.Session, r *policy.Recipient, atEOM, learned bool) outcome {
	snd := newSender(s)
	pairs := []pair{c.global}
	if r != nil && r.Addr.Domain != "" {
		if p, ok := c.perRcpt[addressKey(r.Addr)]; ok {
			pairs = append(pairs, p)
		}
		if p, ok := c.perRcpt[addr.Domain(r.Addr.Domain)]; ok {
			pairs = append(pairs, p)
		}
	}
	var o outcome
	for _, p := range pairs {
		for _, e := range p.white.matching(snd) {
			switch st, how := check(e, s, snd, atEOM); st {
			case proven:
				o.white, o.how = e, how
				return o
			case pending:
				if o.pending == nil {
					o.pending = e
				}
			}
		}
	}
	if learned {
		switch st, how := c.learnedProof(s, snd, atEOM); st {
		case proven:
			o.white, o.how = learnedEntry, how
			return o
		case pending:
			if o.pending == nil {
				o.pending = learnedEntry
			}
		case failed:
			o.unprovenLearned = true
		}
	}
	for _, p := range pairs {
		if m := p.black.matching(snd); len(m) > 0 {
			o.black = m[0]
			break
		}
	}
	return o
}

// Rcpt looks the sender up for this recipient.
func (c *Check) Rcpt(ctx context.Context, s *policy.Session, r *policy.Recipient) []policy.Finding {
	learned, err := c.learned(ctx, s)
	o := c.decide(s, r, false, learned)
	if err != nil && o.white == nil && o.black == nil {
		return []policy.Finding{{Status: policy.StatusTempError, Reason: "learned-store-error", Err: err}}
	}
	switch {
	case o.white != nil:
		return []policy.Finding{whitelist(o)}
	case o.pending != nil && o.black != nil:
		return []policy.Finding{{Status: policy.StatusNone, Reason: "pending-proof",
			Detail: fmt.Sprintf("black-listed by %s unless white-list entry %s is proven (%s) at end of message", o.black, o.pending, o.pending.Proof)}}
	case o.black != nil:
		return []policy.Finding{c.blacklist(s, o.black)}
	case o.pending != nil:
		return []policy.Finding{{Status: policy.StatusNone, Reason: "pending-proof",
			Detail: fmt.Sprintf("white-list entry %s waits for proof (%s) at end of message", o.pending, o.pending.Proof)}}
	}
	return nil
}

// Message decides the entries that wait for DKIM or the From: header, and writes the header naming the
// white-list entries that won. The message is white-listed when every accepted recipient is.
// HeaderOnly tells the engine that the end-of-message stage reads the header and other checks' findings only,
// so the MTA need not send the body on its account.
func (c *Check) HeaderOnly() bool { return true }

func (c *Check) Message(ctx context.Context, s *policy.Session, _ policy.Message) []policy.Finding {
	rcpts := s.AcceptedRcpts()
	if len(rcpts) == 0 {
		return nil
	}
	learned, err := c.learned(ctx, s)
	if err != nil {
		learned = false // nothing changes; the RCPT stage's finding carried the error
	}
	unproven := false
	allWhite, newlyWhite := true, false
	var won []string
	seen := map[*Entry]bool{}
	for _, r := range rcpts {
		o := c.decide(s, r, true, learned)
		unproven = unproven || o.unprovenLearned
		if o.white == nil {
			allWhite = false
			if o.black != nil {
				f := c.blacklist(s, o.black)
				if o.pending != nil {
					f.Detail += fmt.Sprintf("; white-list entry %s not proven (%s)", o.pending, o.pending.Proof)
				}
				return []policy.Finding{f}
			}
			continue
		}
		if !rcptWhitelisted(r) {
			newlyWhite = true
		}
		if !seen[o.white] {
			seen[o.white] = true
			// The header goes out with the message: name the list file, not where it lives on this server.
			won = append(won, fmt.Sprintf("whitelist entry=%q source=%s:%d proof=%s",
				o.white.text, filepath.Base(o.white.Line.Source), o.white.Line.Line, o.how))
		}
	}
	if len(won) == 0 {
		if unproven {
			return []policy.Finding{unprovenLearned(s)}
		}
		return nil
	}
	f := policy.Finding{Status: policy.StatusPass, Reason: "listed", Detail: strings.Join(won, "; ")}
	if allWhite && newlyWhite {
		f.Verdict, f.Reason = policy.Whitelist, ReasonWhitelist
	}
	if c.header != "" {
		for _, w := range won {
			f.AddHeaders = append(f.AddHeaders, policy.Header{Name: c.header, Value: " " + w})
		}
	}
	return []policy.Finding{f}
}

func rcptWhitelisted(r *policy.Recipient) bool {
	for _, f := range r.Findings {
		if f.Check == Name && f.Verdict == policy.Whitelist {
			return true
		}
	}
	return false
}

func whitelist(o outcome) policy.Finding {
	return policy.Finding{Status: policy.StatusPass, Verdict: policy.Whitelist, Reason: ReasonWhitelist,
		Detail: fmt.Sprintf("white-listed by %s, proof %s", o.white, o.how)}
}

func (c *Check) blacklist(s *policy.Session, e *Entry) policy.Finding {
	f := policy.Rejectf("listed", ReasonBlacklist, 550, "5.7.1", "%s",
		strings.ReplaceAll(c.text, "{addr}", policy.ReplySafe(strings.Trim(s.From.String(), "<>"))))
	f.Detail = "black-listed by " + e.String()
	return f
}

func validHeaderName(n string) bool {
	for i := 0; i < len(n); i++ {
		if c := n[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return n != ""
}
