package policy

// Facts that checks record with Session.Set for the checks after them. Each is written by one check and may be
// read by any: a check never imports another check, so the names live here.
const (
	// FactLocalSubmission ("yes") is set by the milter when the MTA says the session has no network client at
	// all (Sendmail's local submission, family "unknown"). A session merely lacking a client IP is not vouched for.
	FactLocalSubmission = "client/local"
	// FactTrustedNetwork ("yes") is set by relay at connect for a client in its trusted networks (or a local
	// submission it is told to trust). Read it through Session.Trusted.
	FactTrustedNetwork = "relay/trusted"
	// FactSPFResult is SPF's result in RFC 7208 words (pass, fail, softfail, neutral, none, temperror,
	// permerror) and FactSPFDomain the domain it was evaluated for (MAIL FROM's, or HELO's for the null sender).
	FactSPFResult = "spf/result"
	FactSPFDomain = "spf/domain"
	// FactDKIMPassDomains is the comma-separated list of d= domains whose DKIM signature verified.
	FactDKIMPassDomains = "dkim/pass-domains"
	// FactDMARCResult is DMARC's result (pass, fail, none, temperror, permerror) and FactDMARCPolicy the
	// disposition applied (none, quarantine, reject).
	FactDMARCResult = "dmarc/result"
	FactDMARCPolicy = "dmarc/policy"
	// FactDNSWL ("yes") is set by dnsbl when the client is on a DNS allow list.
	FactDNSWL = "dnsbl/allow"
	// FactFCrDNS is "pass" or "fail": the client's PTR name resolves back to its address.
	FactFCrDNS = "rdns/fcrdns"
)
