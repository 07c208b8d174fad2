package dnsauth

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/test/stack"
)

// verifyWithMoat runs a delivered message through moat's DKIM verifier (an in-process engine asking the
// DNS server at dnsAddr) and returns the Authentication-Results value.
func verifyWithMoat(t *testing.T, dnsAddr string, raw []byte) string {
	t.Helper()
	toml := fmt.Sprintf("[dns]\nservers = [%q]\n[policy]\nauthserv_id = \"check.moat.test\"\n[checks.dkim]\n", dnsAddr)
	f, err := config.Parse("verify.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.Build(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	e.Connect(ctx, s)
	e.Mail(ctx, s, "a@out.test", "")
	e.Rcpt(ctx, s, rcpt, "")
	s.Headers = headerOf(raw)
	e.Headers(ctx, s)
	e.WriteBody(s, raw)
	return authResults(e.EOM(ctx, s, msg(raw)))
}

// mailDKIMScript verifies stdin with Perl's Mail::DKIM, asking the DNS server HOST PORT.
const mailDKIMScript = `
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

// verifyWithMailDKIM returns Mail::DKIM's line per signature ("pass d=… s=… a=… detail").
func verifyWithMailDKIM(t *testing.T, dnsAddr string, raw []byte) string {
	t.Helper()
	stack.Need(t, "perl")
	if err := exec.Command("perl", "-MMail::DKIM::Verifier", "-MNet::DNS", "-e1").Run(); err != nil {
		if stack.InCI() {
			t.Fatalf("Perl Mail::DKIM or Net::DNS missing (CI=true): %v", err)
		}
		t.Skipf("Perl Mail::DKIM or Net::DNS missing: %v", err)
	}
	script := filepath.Join(t.TempDir(), "verify.pl")
	if err := os.WriteFile(script, []byte(mailDKIMScript), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(dnsAddr, ":")
	cmd := exec.Command("perl", script, host, port)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("perl: %v\n%s", err, out)
	}
	return string(out)
}
