package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"

	"github.com/moatmail/moat/config"
)

// ErrBadEntry is returned for a list entry that is not a domain, address literal, IP or CIDR.
var ErrBadEntry = errors.New("relay: malformed list entry")

// NormalizeDomain returns the form domains are compared in: lower case, without a trailing dot, international
// names in their A-label (xn--) form, and address literals rewritten canonically ("[192.0.2.1]",
// "[IPv6:2001:db8::1]"). Domains are case-insensitive (RFC 5321 section 2.4); address literals are RFC 5321
// section 4.1.3.
func NormalizeDomain(d string) string {
	return canonDomain(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), "."))
}

// CanonDomain is the form a domain as policy.ParseAddress returns it (lower case, one trailing dot removed) is
// compared in: see canonDomain.
func CanonDomain(d string) string { return canonDomain(d) }

// canonDomain is NormalizeDomain for a domain already lower-cased and stripped of its one trailing dot (as
// policy.ParseAddress returns it): a second trailing dot stays and so never matches a list entry.
func canonDomain(d string) string {
	if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
		inner := d[1 : len(d)-1]
		v6 := false
		if rest, ok := strings.CutPrefix(inner, "ipv6:"); ok {
			inner, v6 = rest, true
		}
		ip, err := netip.ParseAddr(inner)
		if err != nil || ip.Zone() != "" {
			return d
		}
		ip = ip.Unmap()
		if ip.Is6() || v6 {
			return "[IPv6:" + ip.String() + "]"
		}
		return "[" + ip.String() + "]"
	}
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			if a, err := idna.Lookup.ToASCII(d); err == nil {
				return a
			}
			return d
		}
	}
	return d
}

// Domains is a set of domains. An entry "example.com" matches that domain; an entry ".example.com" matches
// example.com and every subdomain of it. Address literals ("[192.0.2.1]") match only themselves.
type Domains struct {
	exact  map[string]bool
	parent map[string]bool
}

// NewDomains returns an empty set.
func NewDomains() *Domains {
	return &Domains{exact: map[string]bool{}, parent: map[string]bool{}}
}

// ParseDomains builds a set from list lines; an error names the file and line.
func ParseDomains(lines []config.ListLine) (*Domains, error) {
	d := NewDomains()
	for _, l := range lines {
		if err := d.Add(l.Text); err != nil {
			return nil, &LineError{Line: l, Err: err}
		}
	}
	return d, nil
}

// Add adds one entry.
func (d *Domains) Add(entry string) error {
	sub := strings.HasPrefix(entry, ".")
	name := NormalizeDomain(strings.TrimPrefix(entry, "."))
	if err := validDomain(name); err != nil {
		return err
	}
	if sub {
		if strings.HasPrefix(name, "[") {
			return fmt.Errorf("%w: an address literal has no subdomains", ErrBadEntry)
		}
		d.parent[name] = true
	}
	d.exact[name] = true
	return nil
}

// Len is the number of entries.
func (d *Domains) Len() int { return len(d.exact) }

// Contains reports whether the (normalized) domain is in the set.
func (d *Domains) Contains(domain string) bool {
	if domain == "" {
		return false
	}
	if d.exact[domain] {
		return true
	}
	if len(d.parent) == 0 || strings.HasPrefix(domain, "[") {
		return false
	}
	for i := 0; i < len(domain); i++ {
		if domain[i] == '.' && d.parent[domain[i+1:]] {
			return true
		}
	}
	return false
}

func validDomain(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty domain", ErrBadEntry)
	}
	if strings.HasPrefix(name, "[") {
		if !strings.HasSuffix(name, "]") {
			return fmt.Errorf("%w: unterminated address literal %q", ErrBadEntry, name)
		}
		inner := strings.TrimPrefix(name[1:len(name)-1], "IPv6:")
		if _, err := netip.ParseAddr(inner); err != nil {
			return fmt.Errorf("%w: bad address literal %q", ErrBadEntry, name)
		}
		return nil
	}
	if len(name) > 253 {
		return fmt.Errorf("%w: domain longer than 253 characters", ErrBadEntry)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%w: bad label in domain %q", ErrBadEntry, name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%w: character %q in domain %q", ErrBadEntry, c, name)
			}
		}
	}
	return nil
}

// Networks is a list of IP prefixes.
type Networks struct {
	prefixes []netip.Prefix
}

// ParseNetworks builds a list from lines of IP addresses or CIDR prefixes; an error names the file and line.
func ParseNetworks(lines []config.ListLine) (*Networks, error) {
	n := &Networks{}
	for _, l := range lines {
		p, err := ParsePrefix(l.Text)
		if err != nil {
			return nil, &LineError{Line: l, Err: err}
		}
		n.prefixes = append(n.prefixes, p)
	}
	return n, nil
}

// ParsePrefix parses "192.0.2.0/24", "2001:db8::/32" or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%w: %v", ErrBadEntry, err)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %v", ErrBadEntry, err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Len is the number of prefixes.
func (n *Networks) Len() int { return len(n.prefixes) }

// Contains reports whether ip is in one of the prefixes; IPv4-mapped IPv6 addresses count as IPv4.
func (n *Networks) Contains(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range n.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Shortest prefixes accepted as trusted networks without allow_wide_lists: a shorter one trusts a large part of
// the Internet (0.0.0.0/0 makes an open relay).
const (
	MinTrustedBits4 = 8
	MinTrustedBits6 = 16
)

// ErrTooWide is returned for a list entry that would open the relay to much of the Internet.
var ErrTooWide = errors.New("relay: entry too wide")

// checkWidePrefix refuses trusted networks shorter than MinTrustedBits4 (IPv4) or MinTrustedBits6 (IPv6).
func checkWidePrefix(p netip.Prefix) error {
	min := MinTrustedBits6
	if p.Addr().Is4() {
		min = MinTrustedBits4
	}
	if p.Bits() < min {
		return fmt.Errorf("%w: %s trusts %s addresses; the shortest prefix allowed is /%d (set allow_wide_lists = true to override)",
			ErrTooWide, p, plural(p), min)
	}
	return nil
}

func plural(p netip.Prefix) string {
	if p.Bits() == 0 {
		return "all"
	}
	return "2^" + fmt.Sprint(p.Addr().BitLen()-p.Bits())
}

// IsPublicSuffix reports whether the (normalized) domain is a public suffix of the Public Suffix List, under
// which anyone can register names ("com", "co.uk", "github.io"). A single label that the list does not know
// ("localhost", "test") is not one.
func IsPublicSuffix(domain string) bool {
	if domain == "" || strings.HasPrefix(domain, "[") {
		return false
	}
	ps, icann := publicsuffix.PublicSuffix(domain)
	return ps == domain && (icann || strings.Contains(domain, "."))
}

// checkPublicSuffix refuses a local or relay domain entry that is a public suffix.
func checkPublicSuffix(entry string) error {
	name := NormalizeDomain(strings.TrimPrefix(entry, "."))
	if IsPublicSuffix(name) {
		return fmt.Errorf("%w: %s is a public suffix: mail for every domain under it would be accepted (set allow_wide_lists = true to override)",
			ErrTooWide, name)
	}
	return nil
}
