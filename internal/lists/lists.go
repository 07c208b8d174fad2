// Package lists implements the lists moat's checks are configured with: sets of domains, lists of IP networks,
// and list files (one entry a line, '#' comments), with errors that name the configuration key and the list
// file's own line.
package lists

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
)

// ErrBadEntry is returned for a list entry that is not a domain, address literal, IP or CIDR.
var ErrBadEntry = errors.New("lists: malformed entry")

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

// Add adds one entry.
func (d *Domains) Add(entry string) error {
	sub := strings.HasPrefix(entry, ".")
	name := addr.Domain(strings.TrimPrefix(entry, "."))
	if err := ValidateDomain(name); err != nil {
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

// ValidateDomain reports why a normalized domain (see addr.Domain) or address literal is not a valid list entry.
func ValidateDomain(name string) error {
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
