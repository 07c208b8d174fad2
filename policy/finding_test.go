package policy

import (
	"strings"
	"testing"
)

func TestReplySafe(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice@example.test", "alice@example.test"},
		{"a\r\nb\x00@x", "a??b?@x"},
		{"bücher@example", "b?cher@example"},
		{strings.Repeat("a", 300), strings.Repeat("a", 256) + "..."},
	}
	for _, tt := range tests {
		if got := ReplySafe(tt.in); got != tt.want {
			t.Errorf("ReplySafe(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
