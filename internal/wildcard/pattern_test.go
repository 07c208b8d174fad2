package wildcard

import (
	"errors"
	"strings"
	"testing"
	"unicode"
)

// refMatch is a plain dynamic-programming matcher written straight from the language definition, used as the
// oracle for the fast matcher: dp[i][j] says whether pattern[:i] matches subject[:j].
func refMatch(pattern, subject string) bool {
	p := []rune(pattern)
	s := []rune(strings.ToLower(subject))
	one := func(pc, sc rune) bool {
		switch pc {
		case '?':
			return true
		case '$':
			return sc >= 'a' && sc <= 'z'
		case '%':
			return sc >= '0' && sc <= '9'
		default:
			return unicode.ToLower(pc) == unicode.ToLower(sc)
		}
	}
	prev := make([]bool, len(s)+1)
	prev[0] = true
	for i := 1; i <= len(p); i++ {
		cur := make([]bool, len(s)+1)
		for j := 1; j <= len(s); j++ {
			if p[i-1] == '*' {
				// One or more: pattern[:i-1] matched subject[:j-1] (this star takes s[j-1]), or the star already
				// took subject[j-2] and extends.
				cur[j] = prev[j-1] || cur[j-1]
			} else {
				cur[j] = prev[j-1] && one(p[i-1], s[j-1])
			}
		}
		prev = cur
	}
	return prev[len(s)]
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name, pattern, subject string
		want                   bool
	}{
		// The checklist's examples.
		{"four digits in domain", "*@*%%%%*", "joe@host1234.example.com", true},
		{"four digits at domain end needs one more char", "*@*%%%%*", "joe@a1234", false},
		{"four digits in domain, more", "*@*%%%%*", "joe@x12345y.net", true},
		{"three digits only", "*@*%%%%*", "joe@x123y.net", false},
		{"digits in local part do not count", "*@*%%%%*", "joe1234@example.com", false},
		{"starts with four digits", "%%%%*", "1234abc@example.com", true},
		{"starts with three digits", "%%%%*", "123abc@example.com", false},
		{"four digits then nothing", "%%%%*", "1234", false},
		{"exact address", "spammer@example.com", "spammer@example.com", true},
		{"exact address, case", "spammer@example.com", "SpAmmer@EXAMPLE.com", true},
		{"exact address, other", "spammer@example.com", "spammer@example.org", false},
		{"star needs one char", "*@example.com", "@example.com", false},
		{"star", "*@example.com", "a@example.com", true},
		{"question mark", "???@example.com", "abc@example.com", true},
		{"question mark short", "???@example.com", "ab@example.com", false},
		{"letter", "$$$@example.com", "aBc@example.com", true},
		{"letter rejects digit", "$$$@example.com", "ab1@example.com", false},
		{"digit rejects letter", "%@x", "a@x", false},
		{"relay bang", "*!*", "host!user@example.com", true},
		{"relay bang none", "*!*", "user@example.com", false},
		{"quoted at", `"*@*"@*`, `"user@remote"@example.com`, true},
		{"quoted at plain", `"*@*"@*`, `user@example.com`, false},
		{"quoted bare", `"*@*"`, `"user@remote"`, true},
		{"quoted bare with domain", `"*@*"`, `"user@remote"@local`, false},
		{"many stars", "*%*%*%*%*", "a1b2c3d4e", true},
		{"many stars no digits", "*%*%*%*%*", strings.Repeat("a", 200), false},
		{"middle segment overlap with last", "*ab*b", "xabb", false},
		{"middle segment then last", "*ab*b", "xabxb", true},
		{"utf8 literal", "*@exämple.com", "joe@EXÄMPLE.com", true},
		{"utf8 any", "?@x", "ä@x", true},
		{"null sender", "<>", "<>", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.pattern)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.pattern, err)
			}
			if got := p.Match(tt.subject); got != tt.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
			}
			if ref := refMatch(tt.pattern, tt.subject); ref != tt.want {
				t.Errorf("reference matcher disagrees with the table: refMatch(%q, %q) = %v", tt.pattern, tt.subject, ref)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	for _, bad := range []string{"", "a b@c", "a\tb", "x\x00y", strings.Repeat("a", MaxPatternLen+1), "\xff@x"} {
		if _, err := Compile(bad); !errors.Is(err, ErrBadPattern) {
			t.Errorf("Compile(%q) = %v, want ErrBadPattern", bad, err)
		}
	}
	for _, bad := range []string{"~", "~~a@b", "~ a@b"} {
		if _, err := ParseRule(bad); !errors.Is(err, ErrBadPattern) {
			t.Errorf("ParseRule(%q) = %v, want ErrBadPattern", bad, err)
		}
	}
}
