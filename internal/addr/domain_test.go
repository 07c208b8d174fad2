package addr

import (
	"strings"
	"testing"
)

func TestDomainASCII(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"Example.ORG.", "example.org", ""},
		{"bücher.example", "xn--bcher-kva.example", ""},
		{"BÜCHER.example", "xn--bcher-kva.example", ""},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", ""},
		{"例え.テスト", "xn--r8jz45g.xn--zckzah", ""},
		{"", "", "empty"},
		{"a\u0301\u200d.example", "", "not a valid"},
	}
	for _, tc := range tests {
		got, err := DomainASCII(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("DomainASCII(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("DomainASCII(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
