package addr

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// Domain returns the form every check compares domains in: trimmed, lower case, one trailing dot removed,
// international names as A-labels ("xn--…", RFC 5890 section 2.3.2.1 with the lookup rules of UTS #46), and
// address literals written canonically ("[192.0.2.1]", "[IPv6:2001:db8::1]", RFC 5321 section 4.1.3).
// Domains are case-insensitive (RFC 5321 section 2.4). A name IDNA refuses is returned lower-cased as it is: it
// then matches no list entry. Use [DomainASCII] where such a name must be an error.
func Domain(d string) string {
	return canon(lowerDomain(strings.TrimSpace(d)))
}

// DomainASCII is [Domain] for checks that look a domain up (SPF, DKIM, DMARC, DNSBL): an empty name or one that
// has no A-label form is an error (for SPF, DKIM and DMARC a permerror).
func DomainASCII(d string) (string, error) {
	l := lowerDomain(strings.TrimSpace(d))
	if l == "" {
		return "", errors.New("empty domain")
	}
	if isASCII(l) {
		return canon(l), nil
	}
	a, err := idna.Lookup.ToASCII(l)
	if err != nil {
		return "", fmt.Errorf("domain %q is not a valid internationalized domain name: %w", l, err)
	}
	return strings.ToLower(a), nil
}

// CanonDomain is the comparison form of the address's domain. Parse has already lower-cased it and removed one
// trailing dot; a second trailing dot stays, so "user@example.com.." never matches a list entry.
func (a Address) CanonDomain() string { return canon(a.Domain) }

// ASCIILabels converts the international labels of a DNS query name to A-labels one by one and leaves the
// others alone (such as "_dmarc" or "s._domainkey", which IDNA's rules reject). ok is false when a label does
// not convert: the name cannot be asked for.
func ASCIILabels(name string) (ascii string, ok bool) {
	if isASCII(name) {
		return name, true
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if isASCII(l) {
			continue
		}
		if a, err := idna.Lookup.ToASCII(l); err == nil {
			labels[i] = a
		}
	}
	ascii = strings.Join(labels, ".")
	return ascii, isASCII(ascii)
}

// lowerDomain lower-cases a domain and drops one trailing dot: the form Parse keeps in Address.Domain.
func lowerDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(d, "."))
}

// canon is Domain for a name already lower-cased and without its trailing dot.
func canon(d string) string {
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
	if isASCII(d) {
		return d
	}
	if a, err := idna.Lookup.ToASCII(d); err == nil {
		return a
	}
	return d
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
