package recipients_test

import (
	"context"
	"strings"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/recipients"
)

// TestUnqualifiedRecipient: a bare user name is not waved through. Without unqualified_domain it is refused
// with 550 5.1.3 from an untrusted, unauthenticated client (postmaster excepted, RFC 5321 section 4.5.1); with
// it, the user is validated in that domain.
func TestUnqualifiedRecipient(t *testing.T) {
	const conf = "[checks.recipients]\naddresses = [\"alice@example.com\"]\n"
	ctx := context.Background()
	type session struct{ trusted, auth bool }
	run := func(e *policy.Engine, ss session, to string) policy.Decision {
		s := policy.NewSession()
		if ss.trusted {
			s.Set(policy.FactTrustedNetwork, "yes")
		}
		if ss.auth {
			s.Auth.Authen = "alice"
		}
		e.Connect(ctx, s)
		e.Mail(ctx, s, "sender@remote.example", "")
		_, d := e.Rcpt(ctx, s, to, "")
		return d
	}
	e := policytest.Engine(t, policytest.Policy+conf)
	d := run(e, session{}, "nobody")
	if d.Action != policy.ActReject || d.Reply.Code != 550 || d.Reply.Enhanced != "5.1.3" || d.Reason != recipients.ReasonUnqualified ||
		!strings.HasPrefix(d.Reply.Text, "<nobody>: need fully-qualified address (ref=") {
		t.Errorf("untrusted nobody: %+v, want 550 5.1.3 <nobody>: need fully-qualified address", d)
	}
	for _, tt := range []struct {
		ss session
		to string
	}{
		{session{}, "PostMaster"},
		{session{trusted: true}, "nobody"},
		{session{auth: true}, "nobody"},
	} {
		if d := run(e, tt.ss, tt.to); d.Action != policy.ActContinue {
			t.Errorf("%+v %s: %+v", tt.ss, tt.to, d)
		}
	}

	e = policytest.Engine(t, policytest.Policy+conf+"unqualified_domain = \"Example.COM\"\n")
	for _, tt := range []struct {
		ss session
		to string
		ok bool
	}{
		{session{}, "alice", true},
		{session{}, "nobody", false},
		{session{trusted: true}, "nobody", false}, // validated like nobody@example.com from anyone
		{session{}, "postmaster", true},
	} {
		d := run(e, tt.ss, tt.to)
		if got := d.Action == policy.ActContinue; got != tt.ok {
			t.Errorf("unqualified_domain, %+v %s: accepted = %v, want %v (%+v)", tt.ss, tt.to, got, tt.ok, d)
		}
		if !tt.ok && (d.Reply.Code != 550 || d.Reply.Enhanced != "5.1.1" || !strings.HasPrefix(d.Reply.Text, "<"+tt.to+">: recipient unknown")) {
			t.Errorf("unqualified_domain, %s: reply %v, want 550 5.1.1", tt.to, d.Reply)
		}
	}
	if err := policytest.BuildError(t, policytest.Policy+conf+"unqualified_domain = \"bad domain\"\n"); err == nil ||
		!strings.Contains(err.Error(), "moat.toml:5: checks.recipients.unqualified_domain") {
		t.Errorf("bad unqualified_domain: %v", err)
	}
}

// TestInlineErrorLocatedOnce: an error in an inline list names the file, line and key once.
func TestInlineErrorLocatedOnce(t *testing.T) {
	err := policytest.BuildError(t, policytest.Policy+"[checks.recipients]\naddresses = [\"alice\"]\n")
	if err == nil || strings.Count(err.Error(), "moat.toml") != 1 || !strings.HasPrefix(err.Error(), `moat.toml:4: checks.recipients.addresses: "alice": `) {
		t.Errorf("error %v, want the location once", err)
	}
}
