package greylist

import (
	"net/netip"
	"strings"

	"github.com/moatmail/moat/policy"
)

// NormalizeSender returns the sender part of the triplet: the envelope sender with the per-message parts that
// list managers, forwarders and bounce-address schemes put in it taken out, so that the retry of a real
// sender, or its next message, finds the same triplet. The null sender is keyed on the HELO name.
//
// In order:
//   - lower case (local parts are case-sensitive in RFC 5321 section 2.4, but nobody relies on it);
//   - BATV (draft-levine-smtp-batv-01 section 4.1): "prvs=TAG=local", also the reversed "prvs=local=TAG" and
//     Barracuda's "btv1==TAG==local", and "msprvs1=TAG=local";
//   - SRS (the libsrs2 scheme): "SRS0=HHH=TT=domain=local@forwarder" becomes local@domain, and
//     "SRS1=HHH=forwarder==HHH=TT=domain=local@forwarder2" too;
//   - "+extension": sub-addressing and the VERP of Mailman, SendGrid, Mailgun and Google Groups;
//   - a VERP-encoded recipient "…-user=example.com" (ezmlm, Mailchimp): cut at the separator before it;
//   - per-message numbers and identifiers: a token (between "-", ".", "_", "=") that is all digits, or has a
//     digit and is a long or hexadecimal identifier, becomes "#" (bounce-1234-5678 → bounce-#-#).
func NormalizeSender(from policy.Address, helo string) string {
	if from.Null() {
		return "<>@" + strings.ToLower(strings.TrimSuffix(cleanHelo(helo), "."))
	}
	local, domain := strings.ToLower(from.Local), strings.ToLower(from.Domain)
	local = stripBATV(local)
	if l, d, ok := unwrapSRS(local); ok {
		local, domain = l, d
		local = stripBATV(local)
	}
	if i := strings.IndexByte(local, '+'); i > 0 {
		local = local[:i]
	}
	if i := strings.IndexByte(local, '='); i > 0 {
		if j := strings.LastIndexAny(local[:i], "-._"); j > 0 {
			local = local[:j]
		}
	}
	local = maskIDs(local)
	if domain == "" {
		return local
	}
	return local + "@" + domain
}

// cleanHelo keeps a HELO argument safe as part of a key: no control characters or spaces, bounded length.
func cleanHelo(h string) string {
	if len(h) > 255 {
		h = h[:255]
	}
	return strings.Map(func(c rune) rune {
		if c <= ' ' || c == 0x7f {
			return '_'
		}
		return c
	}, h)
}

// batvTag reports whether s looks like a BATV prvs tag-val: K DDD SSSSSS (draft-levine-smtp-batv-01 section
// 4.1), i.e. 10 hexadecimal characters whose first four are digits.
func batvTag(s string) bool {
	if len(s) != 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		digit := c >= '0' && c <= '9'
		if i < 4 && !digit {
			return false
		}
		if !digit && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func stripBATV(local string) string {
	if rest, ok := strings.CutPrefix(local, "btv1=="); ok { // btv1==TAG==local
		if i := strings.Index(rest, "=="); i >= 0 && i+2 < len(rest) {
			return rest[i+2:]
		}
		return local
	}
	scheme, rest, ok := strings.Cut(local, "=")
	if !ok || !(scheme == "prvs" || scheme == "msprvs1" || scheme == "msprvs") {
		return local
	}
	a, b, ok := strings.Cut(rest, "=")
	if !ok || a == "" || b == "" {
		return local
	}
	if batvTag(b) && !batvTag(a) { // reversed form used by some appliances: prvs=local=TAG
		return a
	}
	return b
}

// unwrapSRS returns the original local part and domain of an SRS address (local is lower case already).
// Separators after SRS0/SRS1 may be '=', '+' or '-' (libsrs2 accepts all three).
func unwrapSRS(local string) (string, string, bool) {
	if len(local) < 5 || !strings.HasPrefix(local, "srs") || (local[3] != '0' && local[3] != '1') {
		return "", "", false
	}
	if c := local[4]; c != '=' && c != '+' && c != '-' {
		return "", "", false
	}
	rest := local[5:]
	if local[3] == '1' {
		// SRS1=HHH=forwarder==HHH=TT=domain=local: the SRS0 part follows "==".
		i := strings.Index(rest, "==")
		if i < 0 {
			return "", "", false
		}
		rest = rest[i+2:]
	}
	// HHH=TT=domain=local
	parts := strings.SplitN(rest, "=", 4)
	if len(parts) != 4 || parts[2] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[3], parts[2], true
}

// maskIDs replaces per-message numbers and identifiers with '#'.
func maskIDs(local string) string {
	var b strings.Builder
	start := 0
	flush := func(end int) {
		tok := local[start:end]
		if isID(tok) {
			b.WriteByte('#')
		} else {
			b.WriteString(tok)
		}
	}
	for i := 0; i < len(local); i++ {
		if strings.IndexByte("-._=", local[i]) >= 0 {
			flush(i)
			b.WriteByte(local[i])
			start = i + 1
		}
	}
	flush(len(local))
	return b.String()
}

func isID(tok string) bool {
	if tok == "" {
		return false
	}
	digits, hex := 0, true
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'f':
		default:
			hex = false
		}
	}
	switch {
	case digits == 0:
		return false
	case digits == len(tok):
		return true
	case len(tok) >= 8:
		return true
	default:
		return hex && len(tok) >= 4
	}
}

// ClientKey returns the client part of the triplet: the client's network (IPv4 /v4 bits, IPv6 /v6 bits), or,
// when spfDomain is not empty (SPF passed and grouping by domain is on), "spf:" and that domain, so that a
// provider retrying from another address of its pool finds the same triplet.
func ClientKey(ip netip.Addr, v4, v6 int, spfDomain string) string {
	if spfDomain != "" {
		return "spf:" + strings.ToLower(strings.TrimSuffix(spfDomain, "."))
	}
	ip = ip.Unmap()
	bits := v6
	if ip.Is4() {
		bits = v4
	}
	p, err := ip.WithZone("").Prefix(bits)
	if err != nil {
		return ip.String()
	}
	return p.String()
}
