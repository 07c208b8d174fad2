package stack

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mailDKIMVerify is a Perl script verifying stdin with Mail::DKIM (the library behind SpamAssassin's DKIM
// plugin), with its key lookups sent to the DNS server given as HOST PORT. It prints one line per signature.
const mailDKIMVerify = `
use strict;
use Mail::DKIM::Verifier;
use Net::DNS;
my ($host, $port) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => [$host], port => $port, recurse => 1, udp_timeout => 5));
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (<STDIN>) { s/\015?\012/\015\012/; $dkim->PRINT($_); }
$dkim->CLOSE;
foreach my $sig ($dkim->signatures) {
    printf "%s d=%s s=%s a=%s %s\n", $sig->result, $sig->domain, $sig->selector, $sig->algorithm, ($sig->result_detail // "");
}
`

// NeedMailDKIM skips the test (or fails it when CI=true) unless perl and its modules Mail::DKIM and Net::DNS
// are installed.
func NeedMailDKIM(t testing.TB) {
	t.Helper()
	Need(t, "perl")
	if err := exec.Command("perl", "-MMail::DKIM::Verifier", "-MNet::DNS", "-e1").Run(); err != nil {
		if InCI() {
			t.Fatalf("Perl Mail::DKIM or Net::DNS missing (CI=true): %v", err)
		}
		t.Skipf("Perl Mail::DKIM or Net::DNS missing: %v", err)
	}
}

// MailDKIMVerify verifies the message raw with Perl's Mail::DKIM, an implementation independent of moat's,
// which looks keys up at the DNS server dnsAddr ("127.0.0.1:port"). It returns perl's output, one line per
// signature ("pass d=… s=… a=… detail"), and perl's error. Call NeedMailDKIM first.
func MailDKIMVerify(t testing.TB, dnsAddr string, raw []byte) (string, error) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "verify.pl")
	if err := os.WriteFile(script, []byte(mailDKIMVerify), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(dnsAddr, ":")
	cmd := exec.Command("perl", script, host, port)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
