package greylist

import (
	"net/netip"
	"strings"

	"github.com/moatmail/moat/internal/addr"
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
//   - per-message numbers and identifiers: a token after a separator ("-", ".", "_", "=") that is all digits,
//     or a hexadecimal identifier of 8 or more characters with a digit, becomes "#" (bounce-1234-5678 →
//     bounce-#-#). The first token is who sends and is kept (john2024@ and mary1999@ differ, and so do the
//     numeric addresses of qq.com), unless the whole local part is one machine identifier (see maskIDs);
//     a token with other letters is a name, not an identifier (smith1985, team.q4).
func NormalizeSender(from addr.Address, helo string) string {
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

// maskIDs replaces per-message numbers and identifiers with '#'. The first token is the sender's name and is
// kept (john2024@, 12345678@qq.com), unless the whole local part is one machine identifier: a long
// hexadecimal group followed only by hexadecimal or numeric groups (Amazon SES's
// 0100018c2f1d3e4b-5f6a7b8c-1d2e-…-000000), which is new for every message.
func maskIDs(local string) string {
	toks, seps := splitTokens(local)
	whole := len(toks) > 1 && isLongHex(toks[0])
	for _, t := range toks[1:] {
		if !isNumeric(t) && !isHexID(t, 1) {
			whole = false
		}
	}
	var b strings.Builder
	for i, t := range toks {
		if i > 0 {
			b.WriteByte(seps[i-1])
		}
		if whole || (i > 0 && (isNumeric(t) || isLongHex(t))) {
			b.WriteByte('#')
		} else {
			b.WriteString(t)
		}
	}
	return b.String()
}

// splitTokens splits a local part at "-", ".", "_" and "=": n tokens and the n-1 separators between them.
func splitTokens(local string) (toks []string, seps []byte) {
	start := 0
	for i := 0; i < len(local); i++ {
		if strings.IndexByte("-._=", local[i]) >= 0 {
			toks = append(toks, local[start:i])
			seps = append(seps, local[i])
			start = i + 1
		}
	}
	return append(toks, local[start:]), seps
}

// isNumeric reports whether tok is all digits (a counter, a timestamp).
func isNumeric(tok string) bool {
	if tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return false
		}
	}
	return true
}

// isLongHex reports whether tok is a hexadecimal identifier of 8 characters or more with a digit in it (a
// word such as "deadbeef" or "facade" is not one).
func isLongHex(tok string) bool { return isHexID(tok, 8) }

func isHexID(tok string, minLen int) bool {
	if len(tok) < minLen {
		return false
	}
	digit := false
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c >= '0' && c <= '9':
			digit = true
		case c >= 'a' && c <= 'f':
		default:
			return false
		}
	}
	return digit
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
