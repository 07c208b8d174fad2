// Package dmarc implements moat's DMARC check (RFC 7489) at end of message, after DKIM verification.
//
// The RFC5322.From domain (exactly one) is looked up at _dmarc.<domain>, then at the organizational domain
// found with the public suffix list (RFC 7489 section 3.2 and 6.6.3). The identifiers are aligned with it,
// relaxed or strict as the record says (section 3.1): the SPF result and domain of the "spf" check
// (policy.FactSPFResult, policy.FactSPFDomain) and the passing DKIM domains of the "dkim" check (policy.FactDKIMPassDomains). DMARC
// passes when either aligns.
//
// On failure the policy applies: p=, or sp= for a subdomain whose record came from the organizational
// domain, sampled by pct= (section 6.6.4: outside the sample, reject becomes quarantine and quarantine
// becomes none). reject refuses with 550 5.7.1, quarantine puts the message in the MTA's hold queue, none
// records. The administrator can override the policy per domain, or only record (apply_policy = false).
// Authenticated senders and trusted networks are exempt, and the engine does not run this check for
// white-listed mail.
//
// A message whose From: has no domain, addresses of several domains, or several From fields gets
// dmarc=permerror and the multiple_from action (default reject): section 6.6.1 lets a receiver reject such
// mail, and letting it through would let a sender pick the domain DMARC is evaluated for. Only the
// addresses of From: are read (a display name in any charset is fine), and the domain is looked up and
// aligned in A-label form (IDNA); a domain that does not convert is a permerror.
//
// # Configuration
//
//	[checks.dmarc]
//	apply_policy = true         # false: record results only
//	multiple_from = "reject"    # no or several From domains: reject, quarantine, score[:N], ignore
//	temperror = "ignore"        # record lookup failed: tempfail, ignore, …
//	[checks.dmarc.override]
//	"partner.example" = "none"  # none, quarantine or reject instead of the domain's policy
package dmarc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/fromheader"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/action"
)

func init() {
	policy.Register("dmarc", setup)
}

type cfg struct {
	ApplyPolicy  bool              `toml:"apply_policy"`
	MultipleFrom string            `toml:"multiple_from"`
	TempError    string            `toml:"temperror"`
	Override     map[string]string `toml:"override"`
}

// Check is the dmarc check.
type Check struct {
	res          *resolver.Resolver
	apply        bool
	multipleFrom action.Action
	temp         action.Action
	override     map[string]Policy
	sample       func() int // 0..99, for pct=
}

func setup(sec *config.Section, env *policy.Env) (policy.Check, error) {
	c := cfg{ApplyPolicy: true, MultipleFrom: "reject", TempError: "ignore"}
	if err := sec.Decode(&c); err != nil {
		return nil, err
	}
	ch := &Check{apply: c.ApplyPolicy, override: map[string]Policy{}, sample: func() int { return rand.IntN(100) }}
	var err error
	if ch.multipleFrom, err = action.Parse(c.MultipleFrom, 1); err != nil {
		return nil, sec.Errorf("multiple_from", "%v", err)
	}
	if ch.temp, err = action.Parse(c.TempError, 1); err != nil {
		return nil, sec.Errorf("temperror", "%v", err)
	}
	for d, p := range c.Override {
		pol, ok := parsePolicy(p)
		if !ok {
			return nil, sec.Errorf("override."+d, "want none, quarantine or reject")
		}
		ad, err := addr.DomainASCII(d)
		if err != nil {
			return nil, sec.Errorf("override."+d, "%v", err)
		}
		ch.override[ad] = pol
	}
	if ch.res, err = env.Resolver(); err != nil {
		return nil, err
	}
	return ch, nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return "dmarc" }

// Kind implements policy.Check.
func (c *Check) Kind() policy.Kind { return policy.KindAntispam }

// OrgDomain returns the organizational domain of d (RFC 7489 section 3.2): the public suffix plus one label,
// or d itself when d is a public suffix or has a single label.
func OrgDomain(d string) string {
	d = addr.Domain(d)
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

// Aligned reports whether an authenticated domain aligns with the From domain (RFC 7489 section 3.1).
// Both are compared in A-label form; a domain that does not convert never aligns.
func Aligned(id, from string, strict bool) bool {
	id, err1 := addr.DomainASCII(id)
	from, err2 := addr.DomainASCII(from)
	if err1 != nil || err2 != nil || id == "" || from == "" {
		return false
	}
	if strict {
		return id == from
	}
	return OrgDomain(id) == OrgDomain(from)
}

// appliedPolicy returns the policy moat applies to a failing message from the domain from, whose record rec
// asks for pol: less strict outside the pct sample, the operator's override, none with apply_policy off. why
// says what changed it, for the finding's detail.
func (c *Check) appliedPolicy(from string, rec *Record, pol Policy) (applied Policy, why string) {
	applied = pol
	if rec.Percent < 100 && c.sample() >= rec.Percent {
		// RFC 7489 section 6.6.4: outside the pct sample, apply the next less strict policy.
		switch pol {
		case PolicyReject:
			applied = PolicyQuarantine
		case PolicyQuarantine:
			applied = PolicyNone
		}
		why += fmt.Sprintf(" (pct=%d, not sampled: %s)", rec.Percent, applied)
	}
	if o, ok := c.override[from]; ok {
		applied = o
		why += ", override " + string(o)
	} else if o, ok := c.override[OrgDomain(from)]; ok {
		applied = o
		why += ", override " + string(o)
	}
	if !c.apply {
		applied = PolicyNone
		why += ", apply_policy off"
	}
	return applied, why
}

// Lookup finds the DMARC record for a From domain: at the domain, else at its organizational domain. It
// returns the record, the domain it was found at, and an error that is temporary when the DNS failed; a nil
// record without error means no policy.
//
// RFC 7489 section 6.6.3: the organizational domain is asked only when the From domain has no DMARC
// record; several records at the From domain end the discovery there, without policy (step 5).
func Lookup(ctx context.Context, res *resolver.Resolver, from string) (*Record, string, error) {
	from, err := addr.DomainASCII(from)
	if err != nil {
		return nil, "", err
	}
	r, n, err := lookupAt(ctx, res, from)
	if err != nil || r != nil || n > 1 {
		return r, from, err
	}
	org := OrgDomain(from)
	if org == from {
		return nil, "", nil
	}
	r, _, err = lookupAt(ctx, res, org)
	return r, org, err
}

// lookupAt returns the one DMARC record at domain and the number of DMARC records found there.
func lookupAt(ctx context.Context, res *resolver.Resolver, domain string) (*Record, int, error) {
	txts, err := res.LookupTXT(ctx, "_dmarc."+domain)
	if err != nil {
		if resolver.IsNotFound(err) {
			return nil, 0, nil
		}
		return nil, 0, err
	}
	var recs []*Record
	for _, t := range txts {
		r, err := ParseRecord(t)
		if err == ErrNotDMARC || err == ErrNoPolicy {
			continue
		}
		recs = append(recs, r)
	}
	// RFC 7489 section 6.6.3 step 5: more than one record, or none, means no policy here.
	if len(recs) != 1 {
		return nil, len(recs), nil
	}
	return recs[0], 1, nil
}

// fromDomain returns the one domain of the From: field(s), in A-label form.
func fromDomain(s *policy.Session) (string, error) {
	return fromheader.Domain(s.HeaderValues("From"))
}

// Message evaluates DMARC for the message.
func (c *Check) Message(ctx context.Context, s *policy.Session, m policy.Message) []policy.Finding {
	if s.Trusted() {
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "authenticated or trusted sender"}}
	}
	from, err := fromDomain(s)
	if err != nil {
		s.Set(policy.FactDMARCResult, string(policy.StatusPermError))
		f := policy.Finding{Status: policy.StatusPermError, Reason: "dmarc-bad-from", Detail: err.Error(),
			AuthResult: &policy.AuthResult{Method: "dmarc", Result: "permerror", Reason: err.Error()}}
		f.ApplyAction(c.multipleFrom, policy.Reply{Code: 550, Enhanced: "5.7.1",
			Text: "Message needs exactly one From: domain (RFC 7489 section 6.6.1)"}, policy.Reply{})
		return []policy.Finding{f}
	}
	ar := &policy.AuthResult{Method: "dmarc", Props: []policy.Prop{{Type: "header", Property: "from", Value: from}}}
	rec, recDomain, err := Lookup(ctx, c.res, from)
	if err != nil {
		s.Set(policy.FactDMARCResult, string(policy.StatusTempError))
		ar.Result = "temperror"
		f := policy.Finding{Status: policy.StatusTempError, Reason: "dmarc-temperror", Err: err, AuthResult: ar,
			Detail: "record lookup for " + from + " failed"}
		f.ApplyAction(c.temp, policy.Reply{}, policy.Reply{Code: 451, Enhanced: "4.7.1",
			Text: "DMARC policy lookup for " + from + " failed temporarily, please try again later"})
		return []policy.Finding{f}
	}
	if rec == nil {
		s.Set(policy.FactDMARCResult, "none")
		ar.Result = "none"
		return []policy.Finding{{Status: policy.StatusNone, AuthResult: ar, Detail: "no DMARC record for " + from}}
	}

	spfOK := s.Get(policy.FactSPFResult) == "pass" && Aligned(s.Get(policy.FactSPFDomain), from, rec.StrictSPF)
	var dkimOK bool
	var dkimDomain string
	for _, d := range strings.Split(s.Get(policy.FactDKIMPassDomains), ",") {
		if Aligned(d, from, rec.StrictDKIM) {
			dkimOK, dkimDomain = true, d
			break
		}
	}
	pol := rec.Policy
	if recDomain != from && rec.SubdomainPolicy != "" {
		pol = rec.SubdomainPolicy // RFC 7489 section 6.3, sp: subdomains of the organizational domain
	}
	detail := fmt.Sprintf("from %s, record at %s: p=%s", from, recDomain, pol)
	if spfOK || dkimOK {
		s.Set(policy.FactDMARCResult, "pass")
		s.Set(policy.FactDMARCPolicy, string(PolicyNone))
		ar.Result = "pass"
		how := "spf " + s.Get(policy.FactSPFDomain)
		if dkimOK {
			how = "dkim " + dkimDomain
		}
		return []policy.Finding{{Status: policy.StatusPass, AuthResult: ar, Detail: detail + ", aligned " + how}}
	}
	ar.Result = "fail"
	s.Set(policy.FactDMARCResult, "fail")
	applied, why := c.appliedPolicy(from, rec, pol)
	detail += why
	s.Set(policy.FactDMARCPolicy, string(applied))
	f := policy.Finding{Status: policy.StatusFail, Reason: "dmarc-fail", AuthResult: ar, Detail: detail,
		Tests: []string{"DMARC_FAIL_" + strings.ToUpper(string(pol))}}
	switch applied {
	case PolicyReject:
		f.Verdict = policy.Reject
		f.Reply = policy.Reply{Code: 550, Enhanced: "5.7.1",
			Text: "Message rejected: DMARC policy of " + from + " (no aligned SPF or DKIM pass)"}
	case PolicyQuarantine:
		f.Verdict = policy.Quarantine
	}
	return []policy.Finding{f}
}
