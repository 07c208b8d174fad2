package senderlists

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
)

// TestIndexMatchesScan: the indexed lookup returns exactly the entries a scan of the whole list finds, in list
// order.
func TestIndexMatchesScan(t *testing.T) {
	texts := []string{"a@example.com", "example.com", ".example.com", "mail.example.com", ".mail.example.com",
		"192.0.2.0/24", "*@*.example.com", "A@Example.COM", "<> proof=none", "other.example", ".com", "b@mail.example.com"}
	var lines []config.ListLine
	for i, x := range texts {
		lines = append(lines, config.ListLine{Text: x, Source: "t", Line: i + 1})
	}
	l, err := parseList(lines, true, defaults{})
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"a@example.com", "b@mail.example.com", "x@deep.mail.example.com", "x@other.example", "", "z@example.org", "a@EXAMPLE.COM."} {
		for _, ip := range []string{"192.0.2.7", "198.51.100.1"} {
			s := policy.NewSession()
			s.ClientIP = netip.MustParseAddr(ip)
			a, err := addr.Parse(from)
			if err != nil {
				t.Fatal(err)
			}
			s.From = a
			snd := newSender(s)
			var want []*Entry
			for _, e := range l.entries {
				if e.matches(snd) {
					want = append(want, e)
				}
			}
			got := l.matching(snd)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s from %s: index found %v, scan %v", from, ip, got, want)
			}
		}
	}
}
