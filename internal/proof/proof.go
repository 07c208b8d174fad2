// Package proof implements the rule by which a check counts a sender as proven to have sent a message: SPF
// passed for the envelope sender's own domain, or a DKIM signature of a domain aligned with it verified. The
// trusted correspondents and the learned white list share it. It works on the facts' values (the SPF result
// and domain, the DKIM pass domains), so that it sits below policy.
package proof

import (
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/moatmail/moat/internal/addr"
)

// SPF reports whether an SPF result proves the sender's domain: "pass" for that very domain.
func SPF(result, spfDomain, senderDomain string) bool {
	return result == "pass" && addr.Domain(spfDomain) != "" && addr.Domain(spfDomain) == addr.Domain(senderDomain)
}

// DKIM returns the first of the comma-separated DKIM pass domains aligned with the sender's domain.
func DKIM(passDomains, senderDomain string) (string, bool) {
	for _, d := range strings.Split(passDomains, ",") {
		if d = addr.Domain(d); d != "" && Aligned(d, addr.Domain(senderDomain)) {
			return d, true
		}
	}
	return "", false
}

// Sender applies the whole rule: SPF first, then DKIM; how names the proof that held ("spf", "dkim").
func Sender(spfResult, spfDomain, dkimPassDomains, senderDomain string) (how string, ok bool) {
	if SPF(spfResult, spfDomain, senderDomain) {
		return "spf", true
	}
	if _, ok := DKIM(dkimPassDomains, senderDomain); ok {
		return "dkim", true
	}
	return "", false
}

// Aligned is DMARC relaxed alignment (RFC 7489 section 3.1): both domains have the same organizational
// domain, from the public suffix list (section 3.2).
func Aligned(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	if a == b {
		return true
	}
	return OrgDomain(a) == OrgDomain(b)
}

// OrgDomain is the organizational domain of d (d itself when the public suffix list has no answer).
func OrgDomain(d string) string {
	o, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return o
}
