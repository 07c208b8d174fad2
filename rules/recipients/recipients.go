// Package recipients implements recipient validation: for the local domains, only listed addresses (or any
// address of a catch-all domain) are accepted at RCPT time; unknown and disabled recipients get
// "550 5.1.1 <addr>: recipient unknown".
//
// # File format
//
// One entry a line, '#' starts a comment:
//
//	alice@example.com      a valid address
//	@example.org           catch-all: every address of example.org is valid
//	!bob@example.com       a disabled account: refused like an unknown one (also under a catch-all)
//
// # Comparison
//
// Domains compare case-insensitively (RFC 5321 section 2.4). Local parts compare exactly, since RFC 5321
// section 2.4 says the local part "MUST BE treated as case sensitive", unless case_sensitive_local = false. With
// extension_separator = "+", "alice+lists@example.com" is looked up as itself first, then as
// "alice@example.com". "postmaster" (any case) is always valid, as RFC 5321 section 4.5.1 requires, unless
// listed as disabled.
//
// # Unqualified recipients
//
// A recipient without a domain (RCPT TO:<nobody>) gets the MTA's default domain (Postfix appends $myorigin).
// With unqualified_domain set to that domain, a bare user is checked as user@unqualified_domain. Without it,
// a bare user from a client that is neither trusted (fact policy.FactTrustedNetwork) nor authenticated is refused with
// "550 5.1.3 <nobody>: need fully-qualified address"; "postmaster" is always accepted (RFC 5321 section
// 4.5.1), and trusted or authenticated clients' bare users are left to the MTA.
//
// Only recipients in the local domains are checked; relay domains and remote recipients are the relay check's
// business. The local domains are local_domains, or when that is empty, the domains named in the list.
package recipients

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/lists"
	"github.com/moatmail/moat/policy"
)

// Name is the check's registered name.
const Name = "recipients"

// Reasons of refused recipients.
const (
	ReasonUnknown     = "recipient-unknown"
	ReasonUnqualified = "unqualified"
)

// ErrBadEntry is returned for a malformed list line.
var ErrBadEntry = errors.New("recipients: malformed entry")

func init() { policy.Register(Name, setup) }

// Config is the [checks.recipients] table.
type Config struct {
	// Addresses and AddressesFile list valid addresses, catch-all domains ("@example.org") and disabled
	// accounts ("!bob@example.com").
	Addresses     []string `toml:"addresses"`
	AddressesFile string   `toml:"addresses_file"`
	// LocalDomains and LocalDomainsFile are the domains whose recipients are checked; default: the domains
	// named in the address list.
	LocalDomains     []string `toml:"local_domains"`
	LocalDomainsFile string   `toml:"local_domains_file"`
	// CaseSensitiveLocal compares local parts exactly (default true, RFC 5321).
	CaseSensitiveLocal bool `toml:"case_sensitive_local"`
	// ExtensionSeparator, when set (e.g. "+"), also looks an address up without its extension.
	ExtensionSeparator string `toml:"extension_separator"`
	// UnqualifiedDomain is the domain the MTA appends to a recipient without one (Postfix: $myorigin).
	UnqualifiedDomain string `toml:"unqualified_domain"`
}

// DefaultConfig returns the defaults of the table.
func DefaultConfig() Config { return Config{CaseSensitiveLocal: true} }

// Check is the recipients check.
type Check struct {
	cfg         Config
	unqualified string // normalized UnqualifiedDomain
	domains     *lists.Domains
	valid       map[string]bool // "local@domain"
	disabled    map[string]bool
	catchAll    map[string]bool // domain
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
	if strings.ContainsAny(cfg.ExtensionSeparator, " \t@\"") || len(cfg.ExtensionSeparator) > 1 {
		return nil, sec.Errorf("extension_separator", "must be one character such as \"+\" or \"-\"")
	}
	c := &Check{cfg: cfg, valid: map[string]bool{}, disabled: map[string]bool{}, catchAll: map[string]bool{}}
	named := lists.NewDomains()
	n := 0
	err := lists.Load(sec, "addresses", cfg.Addresses, "addresses_file", cfg.AddressesFile, func(lines []config.ListLine) error {
		for _, l := range lines {
			domain, err := c.add(l.Text)
			if err == nil {
				err = named.Add(domain)
			}
			if err != nil {
				return &lists.LineError{Line: l, Err: err}
			}
			n++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, sec.Errorf("addresses", "no addresses: set addresses or addresses_file")
	}
	if c.domains, err = lists.LoadDomains(sec, "local_domains", cfg.LocalDomains, "local_domains_file", cfg.LocalDomainsFile, nil); err != nil {
		return nil, err
	}
	if c.domains.Len() == 0 {
		c.domains = named
	}
	if cfg.UnqualifiedDomain != "" {
		c.unqualified = addr.Domain(cfg.UnqualifiedDomain)
		if err := lists.NewDomains().Add(c.unqualified); err != nil || strings.HasPrefix(c.unqualified, "[") {
			return nil, sec.Errorf("unqualified_domain", "%q is not a domain", cfg.UnqualifiedDomain)
		}
	}
	return c, nil
}

// add parses one list entry and returns its domain.
func (c *Check) add(text string) (string, error) {
	disabled := false
	if rest, ok := strings.CutPrefix(text, "!"); ok {
		disabled, text = true, rest
	}
	if rest, ok := strings.CutPrefix(text, "@"); ok {
		if disabled {
			return "", fmt.Errorf("%w: a catch-all domain cannot be disabled; remove the line", ErrBadEntry)
		}
		d := addr.Domain(rest)
		if d == "" {
			return "", fmt.Errorf("%w: empty domain", ErrBadEntry)
		}
		c.catchAll[d] = true
		return d, nil
	}
	a, err := addr.Parse(text)
	if err != nil || a.Null() || a.Domain == "" || a.Route != "" {
		return "", fmt.Errorf("%w: want local@domain, @domain or !local@domain", ErrBadEntry)
	}
	if !a.Quoted && strings.ContainsAny(a.Local, " \t") {
		return "", fmt.Errorf("%w: white space in an unquoted local part", ErrBadEntry)
	}
	key := c.key(a.Local, addr.Domain(a.Domain))
	if disabled {
		c.disabled[key] = true
	} else {
		c.valid[key] = true
	}
	return addr.Domain(a.Domain), nil
}

func (c *Check) key(local, domain string) string {
	if !c.cfg.CaseSensitiveLocal {
		local = strings.ToLower(local)
	}
	return local + "@" + domain
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// Kind implements policy.Check: recipient validation always runs.
func (c *Check) Kind() policy.Kind { return policy.KindAccess }

// Rcpt validates one recipient of a local domain.
func (c *Check) Rcpt(_ context.Context, s *policy.Session, r *policy.Recipient) []policy.Finding {
	a := r.Addr
	shown := policy.ReplySafe(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(a.Raw), "<"), ">"))
	domain := addr.Domain(a.Domain)
	if a.Domain == "" {
		domain = c.unqualified
	}
	if domain == "" {
		switch {
		case strings.EqualFold(a.Local, "postmaster") && !strings.ContainsAny(a.Local, "@%!"):
			// RFC 5321 section 4.5.1: RCPT TO:<Postmaster> without a domain MUST be supported.
			return []policy.Finding{{Status: policy.StatusPass, Reason: "recipient-known", Detail: "unqualified postmaster is always accepted"}}
		case s.Get(policy.FactTrustedNetwork) == "yes" || s.Auth.Authenticated():
			return []policy.Finding{{Status: policy.StatusNone, Detail: "unqualified recipient from a trusted or authenticated client not checked"}}
		}
		f := policy.Rejectf(policy.StatusFail, ReasonUnqualified, 550, "5.1.3", "<%s>: %s", shown, addr.UnqualifiedText)
		f.Detail = "unqualified recipient and no unqualified_domain: the MTA would choose the domain"
		return []policy.Finding{f}
	}
	if !c.domains.Contains(domain) {
		return []policy.Finding{{Status: policy.StatusNone, Detail: domain + " is not a local domain"}}
	}
	ok, why := c.Known(a.Local, domain)
	if ok {
		return []policy.Finding{{Status: policy.StatusPass, Reason: "recipient-known", Detail: why}}
	}
	f := policy.Rejectf(policy.StatusFail, ReasonUnknown, 550, "5.1.1", "<%s>: recipient unknown", shown)
	f.Detail = why
	return []policy.Finding{f}
}

// Known reports whether local@domain (domain normalized) is a valid recipient, and why.
func (c *Check) Known(local, domain string) (bool, string) {
	keys := []string{c.key(local, domain)}
	if sep := c.cfg.ExtensionSeparator; sep != "" {
		if i := strings.Index(local, sep); i > 0 {
			keys = append(keys, c.key(local[:i], domain))
		}
	}
	for _, k := range keys {
		if c.disabled[k] {
			return false, k + " is disabled"
		}
		if c.valid[k] {
			return true, k + " is listed"
		}
	}
	// RFC 5321 section 4.5.1: "postmaster" is case-insensitive and must be accepted.
	if strings.EqualFold(local, "postmaster") {
		return true, "postmaster is always accepted"
	}
	if c.catchAll[domain] {
		return true, domain + " is a catch-all domain"
	}
	return false, keys[0] + " is not listed"
}
