// Package testcheck implements the "test" check: verdicts scripted from the configuration, so that the
// protocol and end-to-end tests can make moat reject, tempfail, panic or tag at a chosen stage and assert the
// exact answer the SMTP client gets. It is compiled into moat only with the build tag moattest.
package testcheck

import (
	"context"
	"io"
	"slices"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
)

// Config is the [checks.test] table.
type Config struct {
	RejectFrom   []string `toml:"reject_from"`   // MAIL FROM addresses answered 550 5.7.1
	RejectTo     []string `toml:"reject_to"`     // RCPT TO addresses answered 550 5.7.1
	TempfailTo   []string `toml:"tempfail_to"`   // RCPT TO addresses answered 451 4.7.1
	PanicTo      []string `toml:"panic_to"`      // RCPT TO addresses that make the check panic
	RejectBody   string   `toml:"reject_body"`   // a body containing this is refused at end of message
	PanicBody    string   `toml:"panic_body"`    // a body containing this makes the check panic at end of message
	Text         string   `toml:"text"`          // reply text
	HeaderName   string   `toml:"header_name"`   // header added to accepted mail
	HeaderValue  string   `toml:"header_value"`  //
	QuarantineTo []string `toml:"quarantine_to"` // recipients whose message goes to the hold queue
}

type check struct{ cfg Config }

func init() {
	policy.Register("test", func(sec *config.Section, _ *policy.Env) (policy.Check, error) {
		c := Config{Text: "test check says no"}
		if err := sec.Decode(&c); err != nil {
			return nil, err
		}
		return &check{cfg: c}, nil
	})
}

func (c *check) Name() string      { return "test" }
func (c *check) Kind() policy.Kind { return policy.KindAccess }

func (c *check) Mail(_ context.Context, s *policy.Session) []policy.Finding {
	if slices.Contains(c.cfg.RejectFrom, s.From.String()) {
		return []policy.Finding{policy.Rejectf(policy.StatusFail, "test-reject", 550, "5.7.1", "%s", c.cfg.Text)}
	}
	return nil
}

func (c *check) Rcpt(_ context.Context, _ *policy.Session, r *policy.Recipient) []policy.Finding {
	to := r.Addr.String()
	switch {
	case slices.Contains(c.cfg.PanicTo, to):
		panic("test check: scripted panic for " + to)
	case slices.Contains(c.cfg.RejectTo, to):
		return []policy.Finding{policy.Rejectf(policy.StatusFail, "test-reject", 550, "5.7.1", "%s", c.cfg.Text)}
	case slices.Contains(c.cfg.TempfailTo, to):
		return []policy.Finding{policy.Tempfailf(policy.StatusTempError, "test-tempfail", 451, "4.7.1", "%s", c.cfg.Text)}
	case slices.Contains(c.cfg.QuarantineTo, to):
		return []policy.Finding{{Status: policy.StatusFail, Verdict: policy.Quarantine, Reason: "test-quarantine"}}
	}
	return []policy.Finding{policy.Pass("")}
}

func (c *check) Message(_ context.Context, _ *policy.Session, m policy.Message) []policy.Finding {
	if c.cfg.RejectBody == "" && c.cfg.PanicBody == "" && c.cfg.HeaderName == "" {
		return nil
	}
	body, _ := io.ReadAll(m.Open())
	if c.cfg.PanicBody != "" && strings.Contains(string(body), c.cfg.PanicBody) {
		panic("test check: scripted panic at end of message")
	}
	if c.cfg.RejectBody != "" && strings.Contains(string(body), c.cfg.RejectBody) {
		return []policy.Finding{policy.Rejectf(policy.StatusFail, "test-body", 550, "5.7.1", "%s", c.cfg.Text)}
	}
	f := policy.Pass("")
	if c.cfg.HeaderName != "" {
		f.AddHeaders = []policy.Header{{Name: c.cfg.HeaderName, Value: " " + c.cfg.HeaderValue}}
	}
	return []policy.Finding{f}
}
