package wildcard

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse checks that any line either parses or is refused with ErrBadPattern, never panics, and that a
// parsed rule keeps its text.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"*@*%%%%*", "%%%%*", "~friend@hotmail.com", "*!*", `"*@*"@*`, "~", "~~x", "a b", "$?%*", "\xff", "<>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, err := ParseRule(line)
		if err != nil {
			return
		}
		got := r.Pattern.String()
		if r.Exclude {
			got = "~" + got
		}
		if got != line {
			t.Fatalf("ParseRule(%q) round-trips to %q", line, got)
		}
	})
}

// FuzzMatch compares the segment matcher with the reference dynamic-programming matcher.
func FuzzMatch(f *testing.F) {
	seeds := [][2]string{
		{"*@*%%%%*", "joe@host1234.example.com"},
		{"%%%%*", "1234abc@example.com"},
		{"*%*%*%*%*", "a1b2c3d4e"},
		{"*ab*b", "xabb"},
		{`"*@*"@*`, `"user@remote"@example.com`},
		{"$?*", "Ab"},
		{"*", "x"},
		{"?*?", "ab"},
		{"*@exämple.com", "joe@EXÄMPLE.com"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, subject string) {
		if len(pattern) > 64 || len(subject) > 256 || !utf8.ValidString(subject) {
			return
		}
		p, err := Compile(pattern)
		if err != nil {
			return
		}
		got := p.Match(subject)
		// The reference lower-cases the subject as a whole string; compare on subjects where that is the same
		// as lower-casing each character.
		if strings.ToLower(subject) != string(NewSubject(subject)) {
			return
		}
		// Patterns match in A-label form (see aLabels); the reference works on the form Compile matches.
		form, _ := aLabels(pattern)
		if want := refMatch(form, subject); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", pattern, subject, got, want)
		}
	})
}
