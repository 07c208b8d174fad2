package wildcard

import (
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
)

func lines(src string, texts ...string) []config.ListLine {
	out := make([]config.ListLine, len(texts))
	for i, t := range texts {
		out[i] = config.ListLine{Text: t, Source: src, Line: i + 1}
	}
	return out
}

func TestListLastMatchDecides(t *testing.T) {
	l, err := ParseList(lines("list", "*@netcom.com", "*@hotmail.com", "~friend@hotmail.com", "~boss@netcom.com"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr     string
		want     bool
		wantLine int // 0: no line matched
	}{
		{"anyone@netcom.com", true, 1},
		{"someone@HOTMAIL.com", true, 2},
		{"friend@hotmail.com", false, 3},
		{"Friend@Hotmail.Com", false, 3},
		{"boss@netcom.com", false, 4},
		{"boss@hotmail.com", true, 2},
		{"friend@netcom.com", true, 1},
		{"friend@example.org", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			got, rule := l.Match(NewSubject(tt.addr))
			if got != tt.want {
				t.Errorf("barred = %v, want %v", got, tt.want)
			}
			line := 0
			if rule != nil {
				line = rule.Line.Line
			}
			if line != tt.wantLine {
				t.Errorf("decided by line %d, want %d", line, tt.wantLine)
			}
		})
	}
	// A later plain line bars again after an exclusion.
	l2, err := ParseList(lines("list", "*@hotmail.com", "~friend@hotmail.com", "f*@hotmail.com"))
	if err != nil {
		t.Fatal(err)
	}
	if barred, _ := l2.Match(NewSubject("friend@hotmail.com")); !barred {
		t.Error("friend@hotmail.com: the last matching line bars it, got not barred")
	}
}

func TestParseListNamesFileAndLine(t *testing.T) {
	_, err := ParseList(lines("/etc/moat/barred", "*@ok.example", "~", "x@y"))
	if err == nil {
		t.Fatal("want an error for a lone '~'")
	}
	if !strings.Contains(err.Error(), "/etc/moat/barred:2:") {
		t.Errorf("error %q does not name the file and line", err)
	}
}
