// Package scriptedcheck implements the "test" check: verdicts scripted from the configuration, so that the
// protocol and end-to-end tests can make moat reject, tempfail, panic or tag at a chosen stage and assert the
// exact answer the SMTP client gets. It is compiled into moat only with the build tag moattest.
package scriptedcheck

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"time"

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
	// ScanMaxSize > 0 makes the check a size-limited content scanner instead of a message checker: it skips
	// messages above this size, as clamd and spamd do.
	ScanMaxSize int64 `toml:"scan_max_size"`
	// Delay makes the end-of-message work take this long (or until its deadline), like a slow scanner.
	Delay config.Duration `toml:"delay"`
	// ConnectError, when set, makes the check also run at connect and HELO, each time with a temporary-error
	// finding carrying this error text, so that tests can count the connection's findings in the log line.
	ConnectError string `toml:"connect_error"`
}

type check struct{ cfg Config }

func init() {
	policy.Register("test", func(sec *config.Section, _ *policy.Env) (policy.Check, error) {
		c := Config{Text: "test check says no"}
		if err := sec.Decode(&c); err != nil {
			return nil, err
		}
		if c.ConnectError != "" {
			return &connChecker{&check{cfg: c}}, nil
		}
		if c.ScanMaxSize > 0 {
			return &scanner{&check{cfg: c}}, nil
		}
		return &check{cfg: c}, nil
	})
}

// scanner is the check as a size-limited content scanner.
type scanner struct{ c *check }

func (s *scanner) Name() string      { return s.c.Name() }
func (s *scanner) Kind() policy.Kind { return s.c.Kind() }
func (s *scanner) MaxSize() int64    { return s.c.cfg.ScanMaxSize }
func (s *scanner) Mail(ctx context.Context, ss *policy.Session) []policy.Finding {
	return s.c.Mail(ctx, ss)
}
func (s *scanner) Rcpt(ctx context.Context, ss *policy.Session, r *policy.Recipient) []policy.Finding {
	return s.c.Rcpt(ctx, ss, r)
}
func (s *scanner) Scan(ctx context.Context, ss *policy.Session, m policy.Message) []policy.Finding {
	if m.Size() > s.c.cfg.ScanMaxSize {
		return []policy.Finding{{Status: policy.StatusSkipped, Reason: "too-large",
			AddHeaders: []policy.Header{{Name: "X-Test-Scan", Value: " skipped: too large"}}}}
	}
	return s.c.Message(ctx, ss, m)
}

// connChecker is the check with connect- and HELO-stage findings as well.
type connChecker struct{ *check }

func (c *connChecker) Connect(context.Context, *policy.Session) []policy.Finding {
	return []policy.Finding{{Status: policy.StatusTempError, Reason: "test-connect", Err: errors.New(c.cfg.ConnectError + " at connect")}}
}

func (c *connChecker) Helo(context.Context, *policy.Session) []policy.Finding {
	return []policy.Finding{{Status: policy.StatusTempError, Reason: "test-helo", Err: errors.New(c.cfg.ConnectError + " at helo")}}
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

func (c *check) Message(ctx context.Context, _ *policy.Session, m policy.Message) []policy.Finding {
	if c.cfg.Delay > 0 {
		select {
		case <-time.After(c.cfg.Delay.D()):
		case <-ctx.Done():
			return []policy.Finding{policy.Tempfailf(policy.StatusTempError, "test-timeout", 451, "4.7.1", "test check timed out")}
		}
	}
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
