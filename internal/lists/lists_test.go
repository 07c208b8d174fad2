package lists

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
)

func TestDomains(t *testing.T) {
	d := NewDomains()
	for _, e := range []string{"Example.COM.", ".parent.test", "[192.0.2.1]", "bücher.example"} {
		if err := d.Add(e); err != nil {
			t.Fatalf("Add(%q): %v", e, err)
		}
	}
	tests := []struct {
		domain string
		want   bool
	}{
		{"example.com", true},
		{"sub.example.com", false}, // an entry without a leading dot is that domain only
		{"parent.test", true},
		{"a.b.parent.test", true},
		{"notparent.test", false},
		{"[192.0.2.1]", true},
		{"xn--bcher-kva.example", true},
		{"", false},
	}
	for _, tt := range tests {
		if got := d.Contains(tt.domain); got != tt.want {
			t.Errorf("Contains(%q) = %v, want %v", tt.domain, got, tt.want)
		}
	}
	for _, bad := range []string{"", "a b.test", ".[192.0.2.1]", "[192.0.2.300]", strings.Repeat("a", 64) + ".test"} {
		if err := NewDomains().Add(bad); !errors.Is(err, ErrBadEntry) {
			t.Errorf("Add(%q) = %v, want ErrBadEntry", bad, err)
		}
	}
}

func TestNetworks(t *testing.T) {
	n, err := ParseNetworks([]config.ListLine{{Text: "192.0.2.0/24"}, {Text: "::ffff:198.51.100.0/120"}, {Text: "2001:db8::1"}})
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{
		"192.0.2.77": true, "::ffff:192.0.2.77": true, "198.51.100.9": true, "2001:db8::1": true,
		"2001:db8::2": false, "203.0.113.1": false,
	} {
		if got := n.Contains(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", ip, got, want)
		}
	}
	if n.Contains(netip.Addr{}) {
		t.Error("the zero address is in no network")
	}
	_, err = ParseNetworks([]config.ListLine{{Text: "192.0.2.0/24", Source: "nets", Line: 1}, {Text: "not-an-ip", Source: "nets", Line: 2}})
	var le *LineError
	if !errors.As(err, &le) || le.Line.Line != 2 || !strings.Contains(err.Error(), "nets:2") {
		t.Errorf("error %v does not name nets:2", err)
	}
}
