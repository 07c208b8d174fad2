package dnsbl

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// filter matches the 127.x.y.z answers of a list, postscreen style: each of the four octets is a number, a
// range [a..b], or a list [a;b;c..d]. The empty filter matches every answer in 127.0.0.0/8 (RFC 5782
// section 2.1), and no other.
type filter struct {
	octets [4][256]bool
	set    bool
	text   string
}

func (f *filter) match(a netip.Addr) bool {
	if !f.set {
		return In127(a)
	}
	if !a.Is4() {
		return false
	}
	b := a.As4()
	for i := 0; i < 4; i++ {
		if !f.octets[i][b[i]] {
			return false
		}
	}
	return true
}

func (f *filter) String() string { return f.text }

// allows reports whether octet i may be v.
func (f *filter) allows(i, v int) bool {
	if !f.set {
		return i != 0 || v == 127
	}
	return f.octets[i][v]
}

// overlaps reports whether some answer matches both filters.
func (f *filter) overlaps(g *filter) bool {
	for i := 0; i < 4; i++ {
		common := false
		for v := 0; v < 256 && !common; v++ {
			common = f.allows(i, v) && g.allows(i, v)
		}
		if !common {
			return false
		}
	}
	return true
}

// parseFilter parses "127.0.0.[2..11]", "127.0.[0..255].[1;3]" and the like.
func parseFilter(s string) (filter, error) {
	f := filter{set: true, text: s}
	parts, err := splitOctets(s)
	if err != nil {
		return f, err
	}
	for i, p := range parts {
		if strings.HasPrefix(p, "[") {
			if !strings.HasSuffix(p, "]") {
				return f, fmt.Errorf("unclosed [ in octet %q", p)
			}
			for _, el := range strings.Split(p[1:len(p)-1], ";") {
				lo, hi, isRange := strings.Cut(el, "..")
				a, err := octet(lo)
				if err != nil {
					return f, err
				}
				b := a
				if isRange {
					if b, err = octet(hi); err != nil {
						return f, err
					}
				}
				if b < a {
					return f, fmt.Errorf("range %q goes backwards", el)
				}
				for v := a; v <= b; v++ {
					f.octets[i][v] = true
				}
			}
			continue
		}
		v, err := octet(p)
		if err != nil {
			return f, err
		}
		f.octets[i][v] = true
	}
	return f, nil
}

// splitOctets splits at the dots outside brackets (a range "2..11" has dots of its own).
func splitOctets(s string) ([]string, error) {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case '.':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	parts = append(parts, s[start:])
	if len(parts) != 4 {
		return nil, fmt.Errorf("filter %q: want four octets such as 127.0.0.[2..11]", s)
	}
	return parts, nil
}

func octet(s string) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || v < 0 || v > 255 {
		return 0, fmt.Errorf("bad octet %q", s)
	}
	return v, nil
}

// parseSite parses the postscreen form "zone[=filter][*weight]".
func parseSite(s string) (zone string, f filter, weight float64, hasWeight bool, err error) {
	rest := s
	if i := strings.LastIndexByte(rest, '*'); i >= 0 {
		weight, err = strconv.ParseFloat(rest[i+1:], 64)
		if err != nil {
			return "", f, 0, false, fmt.Errorf("bad weight in %q", s)
		}
		hasWeight = true
		rest = rest[:i]
	}
	zone, flt, hasFilter := strings.Cut(rest, "=")
	if hasFilter {
		if f, err = parseFilter(flt); err != nil {
			return "", f, 0, false, err
		}
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(zone), ".")), f, weight, hasWeight, nil
}
