// Package addr implements moat's envelope addresses and domain names: the parser of the addresses the MTA
// passes at MAIL FROM and RCPT TO (RFC 5321 paths, with source routes, quoted local parts and address
// literals), and the one normaliser every check compares domains with ([Domain], [DomainASCII]).
package addr

import (
	"errors"
	"fmt"
	"strings"
)

// Address is an envelope address as the MTA passed it (without angle brackets), split for checks. Local parts
// keep their case; domains are lower-cased without a trailing dot.
type Address struct {
	Raw    string // as received
	Route  string // source route ("@a,@b") when present, without the colon
	Local  string // local part; quotes removed from a quoted-string local part
	Domain string // lower case, no trailing dot; "[1.2.3.4]" for an address literal
	Quoted bool   // the local part was a quoted string
	null   bool
}

// Null reports whether this is the null reverse path <>.
func (a Address) Null() bool { return a.null }

// String returns the address as local@domain (or "<>" for the null sender).
func (a Address) String() string {
	if a.null {
		return "<>"
	}
	if a.Domain == "" {
		return a.Local
	}
	local := a.Local
	if a.Quoted {
		local = `"` + strings.ReplaceAll(strings.ReplaceAll(local, `\`, `\\`), `"`, `\"`) + `"`
	}
	return local + "@" + a.Domain
}

// UnqualifiedText is the reply text for a recipient without a domain that moat will not qualify itself; the
// relay and recipients checks both refuse with it, so the client sees one wording.
const UnqualifiedText = "need fully-qualified address"

// ErrMalformed is returned for an address that is not RFC 5321 syntax.
var ErrMalformed = errors.New("addr: malformed address")

// Parse splits an envelope address. It accepts what real MTAs pass on: an optional source route, a
// dot-atom or quoted-string local part, and a domain, an address literal, or no domain at all (a local
// user name, as Sendmail may pass). "" and "<>" give the null address.
func Parse(raw string) (Address, error) {
	s := strings.TrimSpace(raw)
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		s = s[1 : len(s)-1]
	}
	a := Address{Raw: raw}
	if s == "" {
		a.null = true
		return a, nil
	}
	if len(s) > 1024 {
		return a, fmt.Errorf("%w: longer than 1024 bytes", ErrMalformed)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return a, fmt.Errorf("%w: control character in %q", ErrMalformed, raw)
		}
	}
	// Source route: RFC 5321 section 4.1.2, "@one,@two:user@domain".
	if strings.HasPrefix(s, "@") {
		i := strings.IndexByte(s, ':')
		if i < 0 {
			return a, fmt.Errorf("%w: source route without ':' in %q", ErrMalformed, raw)
		}
		a.Route, s = s[:i], s[i+1:]
	}
	local, domain, err := splitAddr(s)
	if err != nil {
		return a, fmt.Errorf("%w: %v in %q", ErrMalformed, err, raw)
	}
	if strings.HasPrefix(local, `"`) {
		if len(local) < 2 || !strings.HasSuffix(local, `"`) {
			return a, fmt.Errorf("%w: text after the quoted local part in %q", ErrMalformed, raw)
		}
		a.Quoted = true
		local = unquote(local)
	} else if i := strings.IndexFunc(local, func(c rune) bool { return !isAtext(c) && c != '.' }); i >= 0 {
		return a, fmt.Errorf("%w: character %q not allowed in an unquoted local part in %q", ErrMalformed, local[i], raw)
	}
	if local == "" {
		return a, fmt.Errorf("%w: empty local part in %q", ErrMalformed, raw)
	}
	a.Local = local
	a.Domain = lowerDomain(domain)
	if domain != "" && a.Domain == "" {
		return a, fmt.Errorf("%w: empty domain in %q", ErrMalformed, raw)
	}
	return a, nil
}

// isAtext reports whether c may appear in a dot-atom (RFC 5322 section 3.2.3); non-ASCII is allowed for
// SMTPUTF8 (RFC 6531 section 3.3).
func isAtext(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80 ||
		strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", c)
}

// splitAddr splits at the last '@' outside a quoted string.
func splitAddr(s string) (local, domain string, err error) {
	inQuote, esc, at := false, false, -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case c == '\\' && inQuote:
			esc = true
		case c == '"':
			inQuote = !inQuote
		case c == '@' && !inQuote:
			at = i
		}
	}
	if inQuote {
		return "", "", errors.New("unterminated quoted string")
	}
	if at < 0 {
		return s, "", nil
	}
	local, domain = s[:at], s[at+1:]
	if domain == "" {
		return "", "", errors.New("empty domain")
	}
	if strings.ContainsAny(domain, " \t\"<>") {
		return "", "", errors.New("invalid character in domain")
	}
	return local, domain, nil
}

func unquote(q string) string {
	if len(q) >= 2 && q[0] == '"' && q[len(q)-1] == '"' {
		q = q[1 : len(q)-1]
	}
	var b strings.Builder
	esc := false
	for i := 0; i < len(q); i++ {
		if !esc && q[i] == '\\' {
			esc = true
			continue
		}
		esc = false
		b.WriteByte(q[i])
	}
	return b.String()
}
