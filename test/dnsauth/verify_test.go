package dnsauth

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/test/stack"
)

// verifyWithMoat runs a delivered message through moat's DKIM verifier (an in-process engine asking the
// DNS server at dnsAddr) and returns the Authentication-Results value.
func verifyWithMoat(t *testing.T, dnsAddr string, raw []byte) string {
	t.Helper()
	e := policytest.Engine(t, fmt.Sprintf("[dns]\nservers = [%q]\n[policy]\nauthserv_id = \"check.moat.test\"\n[checks.dkim]\n", dnsAddr))
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	e.Connect(ctx, s)
	e.Mail(ctx, s, "a@out.test", "")
	e.Rcpt(ctx, s, rcpt, "")
	s.Headers = policytest.Headers(raw)
	e.Headers(ctx, s)
	e.WriteBody(s, raw)
	return policytest.AuthResults(e.EOM(ctx, s, policytest.Msg(raw)))
}

// verifyWithMailDKIM returns Mail::DKIM's line per signature ("pass d=… s=… a=… detail").
func verifyWithMailDKIM(t *testing.T, dnsAddr string, raw []byte) string {
	t.Helper()
	stack.NeedMailDKIM(t)
	out, err := stack.MailDKIMVerify(t, dnsAddr, raw)
	if err != nil {
		t.Fatalf("perl: %v\n%s", err, out)
	}
	return out
}
