// Package wildcard implements the ordered wildcard lists of moat's barring rules: patterns in which '*' matches
// one or more characters, '?' one character, '$' one letter (A-Z, any case) and '%' one digit, compared
// case-insensitively, and lists read top to bottom in which a line starting with '~' excludes what earlier lines
// included and the last matching line decides. Matching is linear in the subject's length: it never backtracks.
package wildcard

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrBadPattern is returned for a line that is not a valid pattern.
var ErrBadPattern = errors.New("wildcard: malformed pattern")

// MaxPatternLen bounds the length of one pattern, in bytes.
const MaxPatternLen = 512

type tokKind uint8

const (
	tokLit    tokKind = iota // one character, compared case-insensitively
	tokAny                   // '?': exactly one character
	tokLetter                // '$': one letter A-Z, any case
	tokDigit                 // '%': one digit 0-9
)

type token struct {
	kind tokKind
	r    rune // for tokLit: the lower-cased character
}

func (t token) matches(c rune) bool {
	switch t.kind {
	case tokAny:
		return true
	case tokLetter:
		return c >= 'a' && c <= 'z' // the subject is lower-cased
	case tokDigit:
		return c >= '0' && c <= '9'
	default:
		return t.r == c
	}
}

// Pattern is one compiled wildcard pattern.
//
// A '*' matches one or more characters, so it is compiled as "a gap of any length" followed by one '?'. The
// pattern then is a list of segments (runs of single-character tokens) separated by gaps. The first segment is
// anchored at the start of the subject, the last one at its end, and each middle segment is placed at its
// leftmost position after the previous one. Leftmost placement is optimal for gaps that match any string, so
// the matcher never backtracks: it does at most len(pattern) comparisons per subject position, O(len(pattern)
// × len(subject)) in the worst case and about O(len(subject)) for ordinary patterns.
type Pattern struct {
	src  string
	segs [][]token // segments; len(segs) == gaps+1
	min  int       // minimum subject length in characters
}

// String returns the pattern as written.
func (p *Pattern) String() string { return p.src }

// Compile parses one pattern in the barring language (moat's wildcard syntax):
//
//   - one or more characters
//     ?  exactly one character
//     $  one letter A-Z (any case)
//     %  one digit 0-9
//
// Every other character matches itself, case-insensitively. A pattern may not be empty, contain white space or
// control characters, or be longer than MaxPatternLen bytes.
func Compile(src string) (*Pattern, error) {
	if src == "" {
		return nil, fmt.Errorf("%w: empty pattern", ErrBadPattern)
	}
	if len(src) > MaxPatternLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrBadPattern, MaxPatternLen)
	}
	if !utf8.ValidString(src) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrBadPattern)
	}
	match, err := aLabels(src)
	if err != nil {
		return nil, err
	}
	p := &Pattern{src: src}
	cur := []token{}
	for _, c := range match {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return nil, fmt.Errorf("%w: white space or control character %q", ErrBadPattern, c)
		}
		switch c {
		case '*':
			p.segs = append(p.segs, cur)
			cur = []token{{kind: tokAny}}
		case '?':
			cur = append(cur, token{kind: tokAny})
		case '$':
			cur = append(cur, token{kind: tokLetter})
		case '%':
			cur = append(cur, token{kind: tokDigit})
		default:
			cur = append(cur, token{kind: tokLit, r: unicode.ToLower(c)})
		}
		p.min++
	}
	p.segs = append(p.segs, cur)
	return p, nil
}

// aLabels rewrites the international labels of the pattern's domain part (after its last '@') in A-label form,
// the form subjects' domains are matched in (see [NewSubject]): "*@bücher.example" matches the domain however the
// client wrote it. A label with both non-ASCII characters and wildcards has no A-label form and is refused.
func aLabels(src string) (string, error) {
	at := strings.LastIndexByte(src, '@')
	if at < 0 {
		return src, nil
	}
	domain := src[at+1:]
	labels := strings.Split(domain, ".")
	changed := false
	for i, l := range labels {
		if isASCII(l) {
			continue
		}
		if strings.ContainsAny(l, "*?$%") {
			return "", fmt.Errorf("%w: international label %q with wildcards: write it in A-label (xn--) form", ErrBadPattern, l)
		}
		a, err := idna.Lookup.ToASCII(l)
		if err != nil {
			return "", fmt.Errorf("%w: international label %q: %v", ErrBadPattern, l, err)
		}
		labels[i], changed = a, true
	}
	if !changed {
		return src, nil
	}
	return src[:at+1] + strings.Join(labels, "."), nil
}

// Subject is an address prepared for matching: lower-cased and split into characters. Prepare it once and
// match it against many patterns.
type Subject []rune

// NewSubject prepares s for matching: international labels of the domain part (after the last '@') are
// rewritten as A-labels, the form patterns are compiled in.
func NewSubject(s string) Subject {
	if at := strings.LastIndexByte(s, '@'); at >= 0 && !isASCII(s[at+1:]) {
		if a, err := idna.Lookup.ToASCII(s[at+1:]); err == nil {
			s = s[:at+1] + a
		}
	}
	out := make([]rune, 0, len(s))
	for _, c := range s {
		out = append(out, unicode.ToLower(c))
	}
	return out
}

// Match reports whether the whole subject matches the pattern.
func (p *Pattern) Match(s string) bool { return p.MatchSubject(NewSubject(s)) }

// MatchSubject is Match on a prepared subject.
func (p *Pattern) MatchSubject(s Subject) bool {
	if len(s) < p.min {
		return false
	}
	segs := p.segs
	if len(segs) == 1 {
		return len(s) == len(segs[0]) && segAt(segs[0], s, 0)
	}
	first, last := segs[0], segs[len(segs)-1]
	if !segAt(first, s, 0) {
		return false
	}
	end := len(s) - len(last)
	if end < len(first) || !segAt(last, s, end) {
		return false
	}
	pos := len(first)
	for _, seg := range segs[1 : len(segs)-1] {
		i := find(seg, s[:end], pos)
		if i < 0 {
			return false
		}
		pos = i + len(seg)
	}
	return true
}

// segAt reports whether seg matches s at position i.
func segAt(seg []token, s Subject, i int) bool {
	if i+len(seg) > len(s) {
		return false
	}
	for j, t := range seg {
		if !t.matches(s[i+j]) {
			return false
		}
	}
	return true
}

// find returns the leftmost position at or after from where seg matches within s, or -1.
func find(seg []token, s Subject, from int) int {
	for i := from; i+len(seg) <= len(s); i++ {
		if segAt(seg, s, i) {
			return i
		}
	}
	return -1
}

// IsPattern reports whether s uses a wildcard of the barring language (moat's wildcard syntax) (and so is not a plain address).
func IsPattern(s string) bool { return strings.ContainsAny(s, "*?$%") }

// MustCompile is Compile that panics on error, for patterns fixed in code.
func MustCompile(src string) *Pattern {
	p, err := Compile(src)
	if err != nil {
		panic(err)
	}
	return p
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
