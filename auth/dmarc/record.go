package dmarc

import (
	"errors"
	"strconv"
	"strings"
)

// Policy is a DMARC disposition: none, quarantine or reject.
type Policy string

// Policies (RFC 7489 section 6.3, tag p).
const (
	PolicyNone       Policy = "none"
	PolicyQuarantine Policy = "quarantine"
	PolicyReject     Policy = "reject"
)

// Record is a parsed DMARC record.
type Record struct {
	Policy          Policy
	SubdomainPolicy Policy // "" when sp= is absent or invalid: p applies
	StrictDKIM      bool   // adkim=s
	StrictSPF       bool   // aspf=s
	Percent         int    // pct=, 0..100
	RUA             []string
}

// ErrNotDMARC says the text is not a DMARC record (no "v=DMARC1" first).
var ErrNotDMARC = errors.New("dmarc: not a DMARC record")

// ErrNoPolicy says the record has no usable p= and no valid rua=: it is ignored (RFC 7489 section 6.6.3).
var ErrNoPolicy = errors.New("dmarc: record without a valid policy")

// ParseRecord parses a DMARC record leniently, as RFC 7489 allows: tag names and values are
// case-insensitive, unknown tags are ignored (section 6.3), an invalid sp, adkim, aspf or pct falls back
// to its default instead of losing the whole record, and a missing or invalid p with a valid rua means
// p=none (section 6.6.3, step 6).
func ParseRecord(txt string) (*Record, error) {
	parts := strings.Split(txt, ";")
	first := strings.TrimSpace(parts[0])
	k, v, ok := strings.Cut(first, "=")
	// RFC 7489 section 6.4: v=DMARC1 must come first.
	if !ok || !strings.EqualFold(strings.TrimSpace(k), "v") || !strings.EqualFold(strings.TrimSpace(v), "DMARC1") {
		return nil, ErrNotDMARC
	}
	r := &Record{Percent: 100}
	havePolicy := false
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		switch k {
		case "p":
			if pol, ok := parsePolicy(v); ok {
				r.Policy, havePolicy = pol, true
			}
		case "sp":
			if pol, ok := parsePolicy(v); ok {
				r.SubdomainPolicy = pol
			}
		case "adkim":
			r.StrictDKIM = strings.EqualFold(v, "s")
		case "aspf":
			r.StrictSPF = strings.EqualFold(v, "s")
		case "pct":
			if n, err := strconv.Atoi(v); err == nil {
				r.Percent = max(0, min(100, n))
			}
		case "rua":
			for _, u := range strings.Split(v, ",") {
				u = strings.TrimSpace(u)
				if i := strings.IndexByte(u, ':'); i > 0 && !strings.ContainsAny(u, " \t") {
					r.RUA = append(r.RUA, u)
				}
			}
		}
	}
	if !havePolicy {
		if len(r.RUA) == 0 {
			return nil, ErrNoPolicy
		}
		r.Policy = PolicyNone
	}
	return r, nil
}

func parsePolicy(v string) (Policy, bool) {
	switch strings.ToLower(v) {
	case "none":
		return PolicyNone, true
	case "quarantine":
		return PolicyQuarantine, true
	case "reject":
		return PolicyReject, true
	}
	return "", false
}
