package barring_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/moatmail/moat/internal/wildcard"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

// TestInternationalDomains: barring compares domains in the form relay and senderlists do (A-labels), so a
// pattern bars a domain whichever way the pattern and the client write it.
func TestInternationalDomains(t *testing.T) {
	for _, p := range []struct {
		pattern string
		sub     bool // the pattern bars the subdomains only
	}{{"*@bücher.example", false}, {"*@BÜCHER.example", false}, {"*@xn--bcher-kva.example", false}, {"*@*.xn--bcher-kva.example", true}} {
		pattern := p.pattern
		e := policytest.Engine(t, policytest.Policy+"[checks.barring]\nsenders = [\""+pattern+"\"]\nrecipients = [\""+pattern+"\"]\n")
		for _, addr := range []string{"x@bücher.example", "x@BÜCHER.EXAMPLE.", "x@xn--bcher-kva.example", "x@mail.bücher.example"} {
			wantBarred := strings.HasPrefix(addr, "x@mail.") == p.sub
			ctx := context.Background()
			s := policy.NewSession()
			d := e.Mail(ctx, s, addr, "")
			if got := d.Action == policy.ActReject; got != wantBarred {
				t.Errorf("pattern %q, MAIL FROM:<%s>: barred = %v, want %v", pattern, addr, got, wantBarred)
			}
			s = policy.NewSession()
			e.Mail(ctx, s, "a@remote.example", "")
			if _, d := e.Rcpt(ctx, s, addr, ""); (d.Action == policy.ActReject) != wantBarred {
				t.Errorf("pattern %q, RCPT TO:<%s>: barred = %v, want %v", pattern, addr, d.Action == policy.ActReject, wantBarred)
			}
		}
	}
	// An international label with wildcards has no A-label form.
	if _, err := wildcard.Compile("*@bü*.example"); !errors.Is(err, wildcard.ErrBadPattern) {
		t.Errorf("wildcard.Compile(*@bü*.example) = %v, want wildcard.ErrBadPattern", err)
	}
	// Local parts are left alone.
	if !wildcard.MustCompile("jürgen@*").Match("JÜRGEN@example.com") {
		t.Error("international local part no longer matches")
	}
}

// TestInlineErrorLocatedOnce: an error in an inline list names the file, line and key once.
func TestInlineErrorLocatedOnce(t *testing.T) {
	err := policytest.BuildError(t, policytest.Policy+"[checks.barring]\nsenders = [\"ok@example.com\", \"a b\"]\n")
	if err == nil || strings.Count(err.Error(), "moat.toml") != 1 || !strings.HasPrefix(err.Error(), `moat.toml:4: checks.barring.senders: "a b": `) {
		t.Errorf("error %v, want the location once", err)
	}
}
