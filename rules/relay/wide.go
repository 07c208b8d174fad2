package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/moatmail/moat/internal/addr"
	"golang.org/x/net/publicsuffix"
)

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
	name := addr.Domain(strings.TrimPrefix(entry, "."))
	if IsPublicSuffix(name) {
		return fmt.Errorf("%w: %s is a public suffix: mail for every domain under it would be accepted (set allow_wide_lists = true to override)",
			ErrTooWide, name)
	}
	return nil
}
