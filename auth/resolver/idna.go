package resolver

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"

	"github.com/moatmail/moat/policy"
)

// ToASCII normalizes a domain for DNS and for comparison: lower case, without the trailing dot, and with
// every Unicode label (U-label) converted to its A-label ("xn--…", RFC 5890 section 2.3.2.1, with the
// lookup rules of UTS #46). Checks call it on every domain they take from mail (From:, MAIL FROM, HELO,
// DKIM d=) before they look it up or align it, so that "bücher.example" and "xn--bcher-kva.example" are
// one domain. A domain that cannot be converted is an error; for SPF, DKIM and DMARC that is a permerror.
func ToASCII(d string) (string, error) {
	d = policy.NormalizeDomain(strings.TrimSpace(d))
	if d == "" {
		return "", errors.New("empty domain")
	}
	if isASCII(d) {
		return d, nil
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("domain %q is not a valid internationalized domain name: %w", d, err)
	}
	return strings.ToLower(a), nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// asciiName converts the Unicode labels of a query name to A-labels one by one, leaving the others (such as
// "_dmarc" or "s._domainkey", which IDNA's rules reject) alone. A label that does not convert is left as it
// is, and the name then fails as invalid.
func asciiName(name string) string {
	if isASCII(name) {
		return name
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
	return strings.Join(labels, ".")
}
