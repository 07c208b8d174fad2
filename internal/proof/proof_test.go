package proof

import "testing"

func TestSender(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		spf, spfDomain, dkim, dom string
		how                       string
	}{
		{"spf pass", "pass", "remote.example", "", "Remote.Example", "spf"},
		{"spf pass for another domain", "pass", "other.example", "", "remote.example", ""},
		{"spf pass for a parent is not the sender's domain", "pass", "remote.example", "", "mail.remote.example", ""},
		{"spf fail", "fail", "remote.example", "", "remote.example", ""},
		{"aligned dkim", "fail", "remote.example", "x.example,mail.remote.example", "remote.example", "dkim"},
		{"unaligned dkim", "", "", "other.example", "remote.example", ""},
		{"dkim of a public suffix", "", "", "co.uk", "a.co.uk", ""},
		{"nothing", "", "", "", "remote.example", ""},
	} {
		how, ok := Sender(tc.spf, tc.spfDomain, tc.dkim, tc.dom)
		if how != tc.how || ok != (tc.how != "") {
			t.Errorf("%s: %q %v, want %q", tc.name, how, ok, tc.how)
		}
	}
	if !Aligned("a.example.co.uk", "b.example.co.uk") || Aligned("a.co.uk", "b.co.uk") || Aligned("", "") {
		t.Fatal("Aligned")
	}
}
