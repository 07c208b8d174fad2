package policy

import (
	"fmt"
	"math"
	"strings"
)

// Action is the answer the milter gives the MTA.
type Action int

const (
	// ActContinue lets the transaction go on (and, at RCPT, accepts the recipient).
	ActContinue Action = iota
	// ActAccept accepts the message (end of message).
	ActAccept
	// ActQuarantine accepts the message into the MTA's hold queue.
	ActQuarantine
	// ActDiscard accepts and drops the message.
	ActDiscard
	// ActTempfail answers 4xx.
	ActTempfail
	// ActReject answers 5xx.
	ActReject
)

var actionNames = [...]string{"continue", "accept", "quarantine", "discard", "tempfail", "reject"}

func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

func (a Action) accepts() bool { return a == ActContinue || a == ActAccept || a == ActQuarantine }

// Decision is the policy step's answer.
type Decision struct {
	Action Action
	Reply  Reply  // for ActReject and ActTempfail: code, enhanced code, and text ending with the reference id
	Check  string // the check whose finding decided, "" when none
	Reason string // that finding's reason (a ScoreCheck reason when a score threshold decided)
	// DryRun lists what dry-run checks would have done: "check: reject (reason)".
	DryRun []string
}

// ScoreCheck is the Decision.Check of an answer the score thresholds of [policy] gave, with the threshold
// that acted as the reason: "policy/reject_score", "policy/quarantine_score".
const (
	ScoreCheck            = "policy"
	ReasonRejectScore     = "reject_score"
	ReasonQuarantineScore = "quarantine_score"
)

// NormalizeScore rounds a total score to a thousandth, so that sums such as 0.1 + 0.2 - 0.3 do not show as
// tiny or negative zero values, and turns -0 into 0.
func NormalizeScore(v float64) float64 {
	v = math.Round(v*1000) / 1000
	if v == 0 {
		return 0
	}
	return v
}

// FormatScore writes a score with one decimal, never "-0.0".
func FormatScore(v float64) string {
	str := fmt.Sprintf("%.1f", v)
	if str == "-0.0" {
		return "0.0"
	}
	return str
}

// Params are the [policy] settings the policy step uses.
type Params struct {
	DryRun          bool    // every check in dry-run mode
	TagScore        float64 // X-Spam-Flag: YES at or above this score
	QuarantineScore float64 // quarantine at or above this score; 0 turns it off
	RejectScore     float64 // reject at or above this score; 0 turns it off
}

// Input is what the policy step decides on.
type Input struct {
	Stage       Stage
	Ref         string
	Findings    []Finding // the findings that count at this point (see the engine)
	Whitelisted bool      // a white list exempts the message or recipient from anti-spam verdicts
	Score       float64   // total spam score of the message (used at end of message)
}

// Analyze turns findings into one answer. It is a pure function of its input:
//   - findings in dry-run mode never act (the engine already turned their verdict into None);
//   - a white-list hit drops the verdicts of anti-spam findings;
//   - before RCPT, anti-spam Reject and Tempfail verdicts wait: the engine hands them in again at RCPT;
//   - Quarantine only acts at end of message; before that it waits too;
//   - the strongest verdict wins, the first finding among equals;
//   - at end of message, the score thresholds apply to the total score unless the message is white-listed.
func Analyze(in Input, p Params) Decision {
	var best *Finding
	for i := range in.Findings {
		f := &in.Findings[i]
		v := f.Verdict
		if v == None || v == Whitelist {
			continue
		}
		if in.Whitelisted && f.Kind == KindAntispam {
			continue
		}
		if in.Stage < StageRcpt && f.Kind == KindAntispam && (v == Reject || v == Tempfail) {
			continue
		}
		if v == Quarantine && in.Stage != StageEOM {
			continue
		}
		if best == nil || v > best.Verdict {
			best = f
		}
	}
	d := Decision{Action: ActContinue}
	if in.Stage == StageEOM {
		d.Action = ActAccept
	}
	for _, f := range in.Findings {
		if f.DryRun && f.WouldBe != None && f.WouldBe != Whitelist {
			d.DryRun = append(d.DryRun, fmt.Sprintf("%s: %s (%s)", f.Check, f.WouldBe, f.Reason))
		}
	}
	if in.Stage == StageEOM && !in.Whitelisted && (best == nil || best.Verdict < Reject) {
		switch {
		case p.RejectScore > 0 && in.Score >= p.RejectScore:
			return finish(d, Reject, ScoreCheck, ReasonRejectScore, Reply{Code: 550, Enhanced: "5.7.1",
				Text: "Message considered spam (score " + FormatScore(in.Score) + ")"}, in.Ref, p)
		case p.QuarantineScore > 0 && in.Score >= p.QuarantineScore && (best == nil || best.Verdict < Quarantine):
			return finish(d, Quarantine, ScoreCheck, ReasonQuarantineScore, Reply{}, in.Ref, p)
		}
	}
	if best == nil {
		return d
	}
	return finish(d, best.Verdict, best.Check, best.Reason, best.Reply, in.Ref, p)
}

func finish(d Decision, v Verdict, check, reason string, r Reply, ref string, p Params) Decision {
	d.Check, d.Reason = check, reason
	switch v {
	case Quarantine:
		d.Action = ActQuarantine
	case Discard:
		d.Action = ActDiscard
	case Tempfail:
		d.Action = ActTempfail
		d.Reply = fixReply(r, 451, "4.7.1", "Temporary failure, please try again later", ref)
	case Reject:
		d.Action = ActReject
		d.Reply = fixReply(r, 550, "5.7.1", "Message rejected by policy", ref)
	}
	return d
}

// fixReply fills in defaults, makes the code and enhanced code agree with the action (Postfix treats a
// mismatch as a malformed reply and applies milter_default_action), and appends the reference id.
func fixReply(r Reply, code int, enhanced, text, ref string) Reply {
	class := code / 100
	if r.Code/100 != class {
		r.Code = code
	}
	if r.Enhanced == "" || !strings.HasPrefix(r.Enhanced, fmt.Sprintf("%d.", class)) {
		r.Enhanced = enhanced
	}
	if r.Text == "" {
		r.Text = text
	}
	r.Text = strings.Map(func(c rune) rune {
		if c == '\r' || c == '\n' {
			return ' '
		}
		return c
	}, r.Text)
	if ref != "" {
		r.Text += " (ref=" + ref + ")"
	}
	return r
}
