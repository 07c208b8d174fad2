// Package relay implements relay control: mail for a domain that is neither a local domain nor a relay domain
// is refused at RCPT time with 550 5.7.1 unless the client is in a trusted network or authenticated with SMTP
// AUTH.
//
// # What counts
//
// Only what cannot be forged decides: the client's IP address (trusted networks), the MTA's {auth_authen}
// macro, and the recipient. The HELO name and the MAIL FROM domain are never looked at.
//
// # The real forward path
//
// The recipient is resolved before deciding, because a local domain at the end of an address says nothing
// about where the mail goes next:
//
//   - percent hack, user%remote@local: refused with "forwarding percent hack is not permitted";
//   - bang path, remote!user@local: refused unless allow_bang_paths;
//   - quoted routing, "user@remote"@local, "user%remote"@local, "remote!user"@local, and an unquoted '@' in a
//     local part: refused unless allow_quoted_routing;
//   - source route, @hop1,@hop2:user@final: the route is ignored (RFC 5321 section 4.1.1.3: servers "SHOULD
//     ignore the routes or MAY decline to support the relaying they imply"; Appendix C) and the final domain
//     decides.
//
// # Unqualified recipients
//
// A recipient without a domain (RCPT TO:<nobody>) goes where the MTA's default domain sends it (Postfix
// appends $myorigin), which moat does not know. From an untrusted, unauthenticated client it is refused with
// "550 5.7.1 <nobody>: need fully-qualified address", except "postmaster" (RFC 5321 section 4.5.1: RCPT
// TO:<Postmaster> without a domain MUST be supported). With unqualified_domain set to the MTA's default domain,
// a bare user is checked as user@unqualified_domain instead.
//
// When a form is allowed, every domain it names (the final domain and each hop) must be a local or relay
// domain. Domains compare case-insensitively without a trailing dot; international names compare in A-label
// form; address literals (user@[192.0.2.1]) are remote unless listed as "[192.0.2.1]".
//
// Trusted and authenticated clients may relay anywhere: for them the check only records why.
//
// # Facts
//
// At connect the check sets policy.FactTrustedNetwork = "yes" for clients in trusted networks. A session without a
// client IP is trusted only when trust_local_submission is on and the session carries the fact
// "client/local" = "yes", which the milter sets for a submission the MTA reports as local (no network
// client); the absence of an IP alone proves nothing.
//
// # Wide lists
//
// Trusted networks shorter than /8 (IPv4) or /16 (IPv6) and local or relay domains that are public suffixes
// ("com", ".co.uk") are refused at setup unless allow_wide_lists = true: they make an open relay.
package relay

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/lists"
	"github.com/moatmail/moat/policy"
)

// Name is the check's registered name.
const Name = "relay"

// Reply texts and reasons.
const (
	PercentHackText = "forwarding percent hack is not permitted"
	UnqualifiedText = addr.UnqualifiedText

	ReasonDenied      = "relay-denied"
	ReasonPercentHack = "percent-hack"
	ReasonBangPath    = "bang-path"
	ReasonQuoted      = "quoted-routing"
	ReasonUnqualified = "unqualified"
)

func init() { policy.Register(Name, setup) }

// Config is the [checks.relay] table.
type Config struct {
	// LocalDomains: mail we accept for delivery. ".example.com" also covers subdomains.
	LocalDomains     []string `toml:"local_domains"`
	LocalDomainsFile string   `toml:"local_domains_file"`
	// RelayDomains: mail we accept from anyone and forward ("always allow relaying to these recipients").
	RelayDomains     []string `toml:"relay_domains"`
	RelayDomainsFile string   `toml:"relay_domains_file"`
	// TrustedNetworks: clients (IP or CIDR) that may relay anywhere.
	TrustedNetworks     []string `toml:"trusted_networks"`
	TrustedNetworksFile string   `toml:"trusted_networks_file"`
	// AllowAuthenticated lets clients authenticated with SMTP AUTH relay anywhere (default true).
	AllowAuthenticated bool `toml:"allow_authenticated"`
	// TrustLocalSubmission trusts a session the milter marks as a local submission (fact "client/local";
	// default true). A session without a client IP and without that fact is untrusted.
	TrustLocalSubmission bool `toml:"trust_local_submission"`
	// UnqualifiedDomain is the domain the MTA appends to a recipient without one (Postfix: $myorigin); unset,
	// unqualified recipients other than postmaster are refused for untrusted, unauthenticated clients.
	UnqualifiedDomain string `toml:"unqualified_domain"`
	// AllowWideLists accepts trusted networks shorter than /8 (IPv4) or /16 (IPv6) and public suffixes as
	// local or relay domains (default false: refused at setup).
	AllowWideLists bool `toml:"allow_wide_lists"`
	// AllowPercentHack, AllowBangPaths and AllowQuotedRouting accept those forms when every domain they name
	// is local or a relay domain (default false: refused).
	AllowPercentHack   bool `toml:"allow_percent_hack"`
	AllowBangPaths     bool `toml:"allow_bang_paths"`
	AllowQuotedRouting bool `toml:"allow_quoted_routing"`
}

// DefaultConfig returns the defaults of the table.
func DefaultConfig() Config {
	return Config{AllowAuthenticated: true, TrustLocalSubmission: true}
}

// Check is the relay check.
type Check struct {
	cfg         Config
	unqualified string // normalized UnqualifiedDomain
	local       *lists.Domains
	relay       *lists.Domains
	trusted     *lists.Networks
}

func setup(sec *config.Section, _ *policy.Env) (policy.Check, error) {
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(sec, cfg)
}

// New builds the check from a decoded configuration; sec locates errors.
func New(sec *config.Section, cfg Config) (*Check, error) {
	c := &Check{cfg: cfg}
	domainTest, netTest := checkPublicSuffix, checkWidePrefix
	if cfg.AllowWideLists {
		domainTest, netTest = nil, nil
	}
	var err error
	if c.local, err = lists.LoadDomains(sec, "local_domains", cfg.LocalDomains, "local_domains_file", cfg.LocalDomainsFile, domainTest); err != nil {
		return nil, err
	}
	if c.relay, err = lists.LoadDomains(sec, "relay_domains", cfg.RelayDomains, "relay_domains_file", cfg.RelayDomainsFile, domainTest); err != nil {
		return nil, err
	}
	if c.trusted, err = lists.LoadNetworks(sec, "trusted_networks", cfg.TrustedNetworks, "trusted_networks_file", cfg.TrustedNetworksFile, netTest); err != nil {
		return nil, err
	}
	if c.local.Len() == 0 && c.relay.Len() == 0 {
		return nil, sec.Errorf("local_domains", "no local or relay domains: all mail would be refused")
	}
	if cfg.UnqualifiedDomain != "" {
		c.unqualified = addr.Domain(cfg.UnqualifiedDomain)
		if err := lists.ValidateDomain(c.unqualified); err != nil {
			return nil, sec.Errorf("unqualified_domain", "%v", err)
		}
		if c.classify(c.unqualified) == "" {
			return nil, sec.Errorf("unqualified_domain", "%s is neither a local nor a relay domain: every unqualified recipient would be refused", c.unqualified)
		}
	}
	return c, nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// Kind implements policy.Check: relay control always runs.
func (c *Check) Kind() policy.Kind { return policy.KindAccess }

// LocalDomains returns the set of local domains.
func (c *Check) LocalDomains() *lists.Domains { return c.local }

// Trusted reports whether the session's client is in a trusted network, or is a local submission (the session
// says so with policy.FactLocalSubmission) and trust_local_submission is on. A session without a client IP is not
// trusted for that alone: an MTA reports some network clients without one (Sendmail's family "unknown",
// a unix-domain socket), and moat scan runs without one unless told otherwise.
func (c *Check) Trusted(s *policy.Session) bool {
	if !s.ClientIP.IsValid() {
		return c.cfg.TrustLocalSubmission && s.Get(policy.FactLocalSubmission) == "yes"
	}
	return c.trusted.Contains(s.ClientIP)
}

// Connect records whether the client is trusted.
func (c *Check) Connect(_ context.Context, s *policy.Session) []policy.Finding {
	if !c.Trusted(s) {
		return []policy.Finding{{Status: policy.StatusNone, Detail: "client not in trusted networks"}}
	}
	s.Set(policy.FactTrustedNetwork, "yes")
	return []policy.Finding{{Status: policy.StatusPass, Reason: "trusted-network", Detail: clientString(s.ClientIP) + " is trusted"}}
}

// Rcpt decides whether mail for this recipient may be accepted from this client.
func (c *Check) Rcpt(_ context.Context, s *policy.Session, r *policy.Recipient) []policy.Finding {
	if c.Trusted(s) {
		return []policy.Finding{{Status: policy.StatusPass, Reason: "trusted-network", Detail: clientString(s.ClientIP) + " may relay"}}
	}
	if c.cfg.AllowAuthenticated && s.Auth.Authenticated() {
		return []policy.Finding{{Status: policy.StatusPass, Reason: "authenticated", Detail: "authenticated as " + s.Auth.Authen}}
	}
	v := c.Resolve(r.Addr)
	if v.Allowed {
		return []policy.Finding{{Status: policy.StatusPass, Reason: v.Reason, Detail: v.Detail}}
	}
	shown := policy.ReplySafe(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(r.Addr.Raw), "<"), ">"))
	var f policy.Finding
	switch v.Reason {
	case ReasonPercentHack:
		f = policy.Rejectf("fail", v.Reason, 550, "5.7.1", "%s", PercentHackText)
	case ReasonUnqualified:
		f = policy.Rejectf("fail", v.Reason, 550, "5.7.1", "<%s>: %s", shown, UnqualifiedText)
	default:
		f = policy.Rejectf("fail", v.Reason, 550, "5.7.1", "<%s>: cannot relay", shown)
	}
	f.Detail = v.Detail
	return []policy.Finding{f}
}

// Verdict is the outcome of resolving a recipient for an untrusted, unauthenticated client.
type Verdict struct {
	Allowed bool
	Reason  string // "local-domain", "relay-domain", or a refusal reason
	Detail  string
}

// Resolve decides whether an untrusted, unauthenticated client may send to the address: it works out every
// domain the address would route through and requires each to be a local or relay domain.
func (c *Check) Resolve(a addr.Address) Verdict {
	local := a.Local
	quotedRouting := a.Quoted && strings.ContainsAny(local, "@%!")
	switch {
	case !a.Quoted && strings.Contains(local, "%") && !c.cfg.AllowPercentHack:
		return deny(ReasonPercentHack, "percent hack in %q", local)
	case !a.Quoted && strings.Contains(local, "!") && !c.cfg.AllowBangPaths:
		return deny(ReasonBangPath, "bang path in %q", local)
	case quotedRouting && !c.cfg.AllowQuotedRouting:
		// "user@remote"@local: an MTA may strip the quotes and route on what is inside.
		return deny(ReasonQuoted, "quoted local part %q contains routing characters", local)
	case !a.Quoted && strings.Contains(local, "@") && !c.cfg.AllowQuotedRouting:
		// user@remote@local is not RFC 5321 syntax, and MTAs differ on which '@' wins.
		return deny(ReasonQuoted, "unquoted '@' in local part %q", local)
	}
	// Every host an allowed form names must be ours too.
	var hops []string
	if strings.ContainsAny(local, "@%!") {
		hops = routeDomains(local)
	}
	final := a.CanonDomain()
	if a.Domain == "" {
		final = c.unqualified
	}
	if final == "" && len(hops) == 0 {
		// A bare user name: the MTA appends its own default domain (Postfix: $myorigin), which we do not know.
		if strings.EqualFold(local, "postmaster") {
			// RFC 5321 section 4.5.1: RCPT TO:<Postmaster> without a domain MUST be supported.
			return Verdict{Allowed: true, Reason: "local-domain", Detail: "unqualified postmaster (RFC 5321 section 4.5.1)"}
		}
		return deny(ReasonUnqualified, "unqualified recipient %q and no unqualified_domain: the MTA would choose the domain", local)
	}
	kind := c.classify(final)
	if final == "" {
		// No domain, but routing hops: the hops decide.
		kind = "local-domain"
	}
	if kind == "" {
		return deny(ReasonDenied, "%s is not a local or relay domain", final)
	}
	for _, h := range hops {
		if c.classify(h) == "" {
			return deny(ReasonDenied, "routes through %s, which is not a local or relay domain", h)
		}
	}
	detail := final + " is a " + strings.ReplaceAll(kind, "-", " ")
	if a.Route != "" {
		detail += fmt.Sprintf(" (source route %s ignored)", a.Route)
	}
	return Verdict{Allowed: true, Reason: kind, Detail: detail}
}

func (c *Check) classify(domain string) string {
	switch {
	case c.local.Contains(domain):
		return "local-domain"
	case c.relay.Contains(domain):
		return "relay-domain"
	}
	return ""
}

func deny(reason, format string, args ...any) Verdict {
	return Verdict{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// routeDomains returns every host named by the routing characters of a local part: the parts after '@' or
// '%', and the parts before '!'. "a!b!user%c%d" names a, b, c and d.
func routeDomains(local string) []string {
	var out []string
	// Bang hops come first: host!rest.
	for {
		i := strings.IndexByte(local, '!')
		if i < 0 {
			break
		}
		out = append(out, addr.Domain(local[:i]))
		local = local[i+1:]
	}
	parts := strings.FieldsFunc(local, func(r rune) bool { return r == '@' || r == '%' })
	if len(parts) > 1 {
		for _, p := range parts[1:] {
			out = append(out, addr.Domain(p))
		}
	}
	if strings.HasSuffix(local, "@") || strings.HasSuffix(local, "%") || strings.HasPrefix(local, "@") || strings.HasPrefix(local, "%") {
		out = append(out, "") // an empty hop never is local: refuse
	}
	return out
}

func clientString(ip netip.Addr) string {
	if !ip.IsValid() {
		return "local submission"
	}
	return ip.String()
}
