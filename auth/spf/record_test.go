package spf_test

import (
	"testing"

	"github.com/moatmail/moat/auth/spf"
)

func TestParseRecord(t *testing.T) {
	good := []struct {
		txt     string
		lookups int
		all     byte
	}{
		{"v=spf1 -all", 0, '-'},
		{"v=spf1 mx a:mail.example.org/24 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.net ~all", 3, '~'},
		{"v=spf1 exists:%{i}.bl.example.org ptr redirect=_spf.example.org", 3, 0},
		{"V=SPF1 MX/24//64 ?all", 1, '?'},
	}
	for _, tt := range good {
		r, err := spf.ParseRecord(tt.txt)
		if err != nil {
			t.Errorf("%q: %v", tt.txt, err)
			continue
		}
		if n := len(r.LookupTerms()); n != tt.lookups {
			t.Errorf("%q: %d lookup terms, want %d", tt.txt, n, tt.lookups)
		}
		q, ok := r.All()
		if ok != (tt.all != 0) || q != tt.all {
			t.Errorf("%q: all = %q %v, want %q", tt.txt, q, ok, tt.all)
		}
	}
	bad := []string{
		"v=spf1 include -all",
		"v=spf1 ip4:300.1.1.1 -all",
		"v=spf1 ip4:2001:db8::1 -all",
		"v=spf1 mx/33 -all",
		"v=spf1 foo:bar -all",
		"v=spf1 redirect=a.example redirect=b.example",
		"v=spf1 all:x",
		"v=spf1 exists:%{z}.example.org",
	}
	for _, txt := range bad {
		if _, err := spf.ParseRecord(txt); err == nil {
			t.Errorf("%q: parsed without error", txt)
		}
	}
	if _, err := spf.ParseRecord("v=spf10 -all"); err != spf.ErrNotSPF {
		t.Errorf("v=spf10: err %v, want ErrNotSPF", err)
	}
	if r, _ := spf.ParseRecord("v=spf1 redirect=_spf.example.org"); r.Redirect() != "_spf.example.org" {
		t.Errorf("redirect %q", r.Redirect())
	}
}
