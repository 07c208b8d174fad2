package spf

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Record is the syntax of one SPF record (RFC 7208 section 4.6), as far as a check of the published
// record needs it: the evaluation itself is blitiri.com.ar/go/spf's.
type Record struct {
	Terms []Term
}

// Term is a mechanism ("mx", "include:…", "-all") or a modifier ("redirect=…").
type Term struct {
	Qualifier byte   // '+', '-', '~' or '?'; 0 for a modifier
	Name      string // lower case: "all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists", or the modifier's name
	Value     string // after ':' or '/' for a mechanism ("" when absent), after '=' for a modifier
	Modifier  bool
}

// ErrNotSPF says the text is not an SPF record: it does not start with "v=spf1".
var ErrNotSPF = errors.New("spf: not an SPF record")

// IsRecord reports whether a TXT record is an SPF record (RFC 7208 section 4.5: "v=spf1" then a space or
// the end), the test that decides which records count when a domain publishes several.
func IsRecord(txt string) bool {
	t := strings.ToLower(txt)
	return t == "v=spf1" || strings.HasPrefix(t, "v=spf1 ")
}

// ParseRecord checks the syntax of an SPF record and returns its terms. The error names the first term
// that is wrong.
func ParseRecord(txt string) (*Record, error) {
	if !IsRecord(txt) {
		return nil, ErrNotSPF
	}
	r := &Record{}
	seen := map[string]bool{}
	for _, f := range strings.Fields(txt)[1:] {
		t, err := parseTerm(f)
		if err != nil {
			return nil, fmt.Errorf("spf: term %q: %w", f, err)
		}
		if t.Modifier && (t.Name == "redirect" || t.Name == "exp") {
			// RFC 7208 section 6: redirect and exp may each appear once.
			if seen[t.Name] {
				return nil, fmt.Errorf("spf: %s= appears twice", t.Name)
			}
			seen[t.Name] = true
		}
		r.Terms = append(r.Terms, t)
	}
	return r, nil
}

func parseTerm(f string) (Term, error) {
	// A modifier is name=value where name starts with a letter (section 4.6.1); a mechanism has no '='
	// before its first ':' or '/'.
	if i := strings.IndexByte(f, '='); i > 0 && !strings.ContainsAny(f[:i], ":/") {
		name := strings.ToLower(f[:i])
		if !isName(name) {
			return Term{}, errors.New("modifier name is not a name")
		}
		t := Term{Name: name, Value: f[i+1:], Modifier: true}
		if (name == "redirect" || name == "exp") && !isDomainSpec(t.Value) {
			return Term{}, errors.New("not a domain")
		}
		return t, nil
	}
	t := Term{Qualifier: '+'}
	if strings.IndexByte("+-~?", f[0]) >= 0 {
		t.Qualifier = f[0]
		f = f[1:]
	}
	name, value := f, ""
	if i := strings.IndexAny(f, ":/"); i >= 0 {
		name, value = f[:i], f[i:]
		if value[0] == ':' {
			value = value[1:]
		}
	}
	t.Name, t.Value = strings.ToLower(name), value
	switch t.Name {
	case "all":
		if value != "" {
			return Term{}, errors.New("all takes no argument")
		}
	case "include", "exists":
		if !isDomainSpec(value) {
			return Term{}, errors.New("needs a domain")
		}
	case "a", "mx":
		domain, cidr := value, ""
		if i := strings.IndexByte(value, '/'); i >= 0 {
			domain, cidr = value[:i], value[i:]
		}
		if domain != "" && !isDomainSpec(domain) {
			return Term{}, errors.New("not a domain")
		}
		if cidr != "" && !validDualCIDR(cidr) {
			return Term{}, errors.New("invalid prefix length")
		}
	case "ptr":
		if value != "" && !isDomainSpec(value) {
			return Term{}, errors.New("not a domain")
		}
	case "ip4", "ip6":
		p, err := netip.ParsePrefix(value)
		if err != nil {
			a, err2 := netip.ParseAddr(value)
			if err2 != nil {
				return Term{}, errors.New("not an address or network")
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if (t.Name == "ip4") != p.Addr().Is4() {
			return Term{}, errors.New("address of the wrong family")
		}
	default:
		return Term{}, errors.New("unknown mechanism")
	}
	return t, nil
}

// LookupTerms returns the terms that cost a DNS lookup and count against the limit of 10
// (RFC 7208 section 4.6.4): include, a, mx, ptr, exists and redirect.
func (r *Record) LookupTerms() []Term {
	var out []Term
	for _, t := range r.Terms {
		switch t.Name {
		case "include", "a", "mx", "ptr", "exists":
			if !t.Modifier {
				out = append(out, t)
			}
		case "redirect":
			if t.Modifier {
				out = append(out, t)
			}
		}
	}
	return out
}

// All returns the qualifier of the "all" mechanism and whether the record has one.
func (r *Record) All() (byte, bool) {
	for _, t := range r.Terms {
		if t.Name == "all" && !t.Modifier {
			return t.Qualifier, true
		}
	}
	return 0, false
}

// Redirect returns the domain of the redirect= modifier, "" without one.
func (r *Record) Redirect() string {
	for _, t := range r.Terms {
		if t.Modifier && t.Name == "redirect" {
			return t.Value
		}
	}
	return ""
}

func isName(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z') {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// isDomainSpec accepts a domain-spec: a domain name, possibly with macros (%{…}, %%, %_, %-).
func isDomainSpec(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t") {
		return false
	}
	if strings.Contains(s, "%") {
		return validMacros(s)
	}
	s = strings.TrimSuffix(s, ".")
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return true
}

func validMacros(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+1 >= len(s) {
			return false
		}
		switch s[i+1] {
		case '%', '_', '-':
			i++
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 3 || strings.IndexByte("slodiphcrtvSLODIPHCRTV", s[i+2]) < 0 {
				return false
			}
			i += end
		default:
			return false
		}
	}
	return true
}

// validDualCIDR checks "/N", "//M" or "/N//M" (section 5.6).
func validDualCIDR(s string) bool {
	v4, v6, dual := s, "", strings.Index(s, "//")
	if dual >= 0 {
		v4, v6 = s[:dual], s[dual+2:]
	}
	check := func(p string, max int) bool {
		n, err := strconv.Atoi(p)
		return err == nil && n >= 0 && n <= max && p == strconv.Itoa(n)
	}
	if v4 != "" && (!strings.HasPrefix(v4, "/") || !check(v4[1:], 32)) {
		return false
	}
	if dual >= 0 && !check(v6, 128) {
		return false
	}
	return v4 != "" || dual >= 0
}
