package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/moatmail/moat/policy/action"
)

// Verdict is what a finding asks the policy step to do. Verdicts are ranked: when findings disagree, the
// strongest wins (Reject > Tempfail > Discard > Quarantine > Whitelist > None).
type Verdict int

const (
	// None records a result without asking for any action (a pass, a score, a tag).
	None Verdict = iota
	// Whitelist exempts the message (or, at RCPT, the recipient) from anti-spam checks.
	Whitelist
	// Quarantine accepts the message into the MTA's hold queue for a person to review.
	Quarantine
	// Discard accepts the message and drops it silently. Use sparingly: nobody is told.
	Discard
	// Tempfail answers 4xx: the client should retry later.
	Tempfail
	// Reject answers 5xx.
	Reject
)

var verdictNames = [...]string{"none", "whitelist", "quarantine", "discard", "tempfail", "reject"}

func (v Verdict) String() string {
	if v >= 0 && int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Status is a check's result in RFC words where one exists ("pass", "fail", "softfail", "neutral", "none",
// "temperror", "permerror", "policy"), or a short word of the check's own ("listed", "found", "clean", "skipped").
type Status string

// Common statuses.
const (
	StatusPass      Status = "pass"
	StatusFail      Status = "fail"
	StatusNone      Status = "none"
	StatusNeutral   Status = "neutral"
	StatusSoftfail  Status = "softfail"
	StatusTempError Status = "temperror"
	StatusPermError Status = "permerror"
	StatusSkipped   Status = "skipped"
)

// Finding is one result of one check.
type Finding struct {
	Check   string  // set by the engine
	Kind    Kind    // set by the engine: the check's kind
	Stage   Stage   // set by the engine
	Status  Status  // what was found
	Verdict Verdict // what the check asks for
	Reason  string  // short machine-friendly reason ("relay-denied", "spf-fail"), for logs and the trace header
	Detail  string  // human detail for logs and `moat scan`; may be long, never sent to the client
	Score   float64 // contribution to the message's spam score (anti-spam checks)
	Scored  bool    // the check scored the message (even with score 0): spam headers are written
	Tests   []string
	Err     error // an error for the log (e.g. a DNS timeout); never sent to the client

	// Reply is the SMTP answer the check suggests for Reject or Tempfail; defaults apply when zero.
	Reply Reply

	// AuthResult is this finding's part of the Authentication-Results header, if any.
	AuthResult *AuthResult

	// AddHeaders are added to the message when it is accepted.
	AddHeaders []Header
	// Prepend, when set, makes AddHeaders go on top of the header block (trace headers such as DKIM-Signature).
	Prepend bool

	DryRun  bool          // set by the engine: the check runs in dry-run mode; the verdict was not applied
	WouldBe Verdict       // with DryRun: the verdict the check asked for
	Elapsed time.Duration // set by the engine
}

// Reply is an SMTP reply: code, enhanced status code and text, e.g. 550, "5.7.1", "<a@b>: cannot relay".
type Reply struct {
	Code     int
	Enhanced string
	Text     string
}

// IsZero reports whether no reply was set.
func (r Reply) IsZero() bool { return r.Code == 0 }

func (r Reply) String() string {
	if r.Enhanced == "" {
		return fmt.Sprintf("%d %s", r.Code, r.Text)
	}
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
}

// ReplySafe makes text from the client (an address) safe to quote in a reply: printable ASCII, with '?' for
// any other character, and at most 256 bytes followed by "..." when cut.
func ReplySafe(s string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= 256 {
			b.WriteString("...")
			break
		}
		if c < 0x20 || c >= 0x7f {
			b.WriteByte('?')
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// AuthResult is one method's entry in Authentication-Results (RFC 8601 section 2.2): method=result, an
// optional reason, and properties such as smtp.mailfrom or header.d.
type AuthResult struct {
	Method string // "spf", "dkim", "dmarc", "iprev", "auth"
	Result string // "pass", "fail", …
	Reason string
	Props  []Prop
}

// Prop is a ptype.property=value pair of an Authentication-Results entry.
type Prop struct {
	Type     string // "smtp", "header", "policy"
	Property string // "mailfrom", "d", "s", "b", "from", "auth", "iprev"
	Value    string
}

// Pass is a finding with status pass and no verdict.
func Pass(reason string) Finding { return Finding{Status: StatusPass, Reason: reason} }

// Rejectf is a Reject finding with the given reply.
func Rejectf(status Status, reason string, code int, enhanced, format string, args ...any) Finding {
	return Finding{Status: status, Verdict: Reject, Reason: reason,
		Reply: Reply{Code: code, Enhanced: enhanced, Text: fmt.Sprintf(format, args...)}}
}

// Tempfailf is a Tempfail finding with the given reply.
func Tempfailf(status Status, reason string, code int, enhanced, format string, args ...any) Finding {
	return Finding{Status: status, Verdict: Tempfail, Reason: reason,
		Reply: Reply{Code: code, Enhanced: enhanced, Text: fmt.Sprintf(format, args...)}}
}

// ApplyAction sets the finding's verdict, reply and score from a configured action. rej and temp are the
// replies used when the action rejects or tempfails.
func (f *Finding) ApplyAction(a action.Action, rej, temp Reply) {
	switch a.Kind {
	case action.Reject:
		f.Verdict, f.Reply = Reject, rej
	case action.Tempfail:
		f.Verdict, f.Reply = Tempfail, temp
	case action.Quarantine:
		f.Verdict = Quarantine
	case action.Score:
		f.Score, f.Scored = a.Score, true
	}
}
