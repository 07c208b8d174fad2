package senderlists

import (
	"net/mail"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/proof"
	"github.com/moatmail/moat/policy"
)

// proofState is the outcome of checking an entry's proof.
type proofState uint8

const (
	proven  proofState = iota // the proof holds (or none is needed)
	pending                   // only end-of-message facts (DKIM, From:) can prove it
	failed                    // it cannot hold
)

// check works out whether the entry's proof holds for the sender. atEOM says whether the DKIM results and the
// From: header are known yet. It returns the state and which proof held ("spf:example.com").
func check(e *Entry, s *policy.Session, snd sender, atEOM bool) (proofState, string) {
	if e.Proof == ProofNone {
		return proven, "none"
	}
	if snd.domain == "" {
		return failed, ""
	}
	if e.Proof&ProofSPF != 0 && s.Get(policy.FactSPFResult) == "pass" {
		// SPF checked the MAIL FROM domain (RFC 7208 section 2.4); accept it for that domain or a parent.
		if d := addr.Domain(s.Get(policy.FactSPFDomain)); d != "" && isSelfOrParent(d, snd.domain) {
			return proven, "spf:" + d
		}
	}
	if e.Proof&(ProofDKIM|ProofDMARC) == 0 {
		return failed, ""
	}
	if !atEOM {
		return pending, ""
	}
	dkim := dkimPassDomains(s)
	if e.Proof&ProofDKIM != 0 {
		for _, d := range dkim {
			if aligned(d, snd.domain) {
				return proven, "dkim:" + d
			}
		}
	}
	if e.Proof&ProofDMARC != 0 {
		if from, ok := headerFromDomain(s); ok && aligned(from, snd.domain) {
			if s.Get(policy.FactSPFResult) == "pass" && aligned(addr.Domain(s.Get(policy.FactSPFDomain)), from) {
				return proven, "dmarc:" + from + "(spf)"
			}
			for _, d := range dkim {
				if aligned(d, from) {
					return proven, "dmarc:" + from + "(dkim)"
				}
			}
		}
	}
	return failed, ""
}

// isSelfOrParent reports whether parent is child or a parent domain of it (but not a public suffix).
func isSelfOrParent(parent, child string) bool {
	if parent == child {
		return true
	}
	if !strings.HasSuffix(child, "."+parent) {
		return false
	}
	ps, _ := publicsuffix.PublicSuffix(parent)
	return ps != parent
}

// aligned is DMARC relaxed alignment (RFC 7489 section 3.1), shared with the other checks that prove senders.
func aligned(a, b string) bool { return proof.Aligned(a, b) }

func dkimPassDomains(s *policy.Session) []string {
	var out []string
	for _, d := range strings.Split(s.Get(policy.FactDKIMPassDomains), ",") {
		if d = addr.Domain(d); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// headerFromDomain returns the domain of the message's single From: address. DMARC is undefined for messages
// with no From:, several From: fields or several addresses in it (RFC 7489 section 6.6.1): no proof then.
func headerFromDomain(s *policy.Session) (string, bool) {
	vals := s.HeaderValues("From")
	if len(vals) != 1 {
		return "", false
	}
	list, err := mail.ParseAddressList(strings.TrimSpace(vals[0]))
	if err != nil || len(list) != 1 {
		return "", false
	}
	at := strings.LastIndexByte(list[0].Address, '@')
	if at < 0 {
		return "", false
	}
	d := addr.Domain(list[0].Address[at+1:])
	return d, d != ""
}
