package policy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// LogMessage writes the one summary line of a message: who sent what to whom, what moat answered and why, the
// reference id quoted in the reply, and the milliseconds each check took. final is the answer that ended the
// message: the end-of-message decision, or the rejection that stopped it earlier.
func (e *Engine) LogMessage(s *Session, final Decision, score float64) {
	LogMessage(e.log, s, final, score)
}

// LogMessage is Engine.LogMessage for a given logger.
func LogMessage(log *slog.Logger, s *Session, final Decision, score float64) {
	level := slog.LevelInfo
	attrs := []slog.Attr{
		slog.String("ref", s.Ref),
		slog.String("queue_id", s.QueueID),
		slog.String("client", clientString(s)),
		slog.String("helo", s.Helo),
		slog.String("from", s.From.String()),
		slog.String("rcpts", rcptSummary(s, final)),
		slog.String("action", summaryAction(final)),
	}
	if !final.Reply.IsZero() {
		attrs = append(attrs, slog.String("reply", final.Reply.String()))
	}
	if final.Reason != "" && final.Action != ActContinue {
		attrs = append(attrs, slog.String("reason", final.Check+"/"+final.Reason))
	}
	attrs = append(attrs, slog.String("score", FormatScore(score)))
	if s.Auth.Authenticated() {
		attrs = append(attrs, slog.String("auth", s.Auth.Authen))
	}
	if s.TLS.Active() {
		attrs = append(attrs, slog.String("tls", s.TLS.Version))
	}
	var times, errs []string
	spent := map[string]time.Duration{}
	var order []string
	all := s.Findings()
	for _, r := range s.Rcpts {
		all = append(all, r.Findings...)
	}
	for _, f := range all {
		if f.Err != nil {
			msg := f.Err.Error()
			if !strings.HasPrefix(msg, f.Check+":") {
				msg = f.Check + ": " + msg
			}
			errs = append(errs, msg)
			if f.Status == StatusTempError && f.Reason == "internal-error" {
				level = slog.LevelError
			}
		}
		if _, ok := spent[f.Check]; !ok {
			order = append(order, f.Check)
		}
		spent[f.Check] += f.Elapsed
	}
	for _, c := range order {
		times = append(times, fmt.Sprintf("%s=%.1f", c, float64(spent[c].Microseconds())/1000))
	}
	checks := formatByStage(all, " ", func(f Finding) string {
		c := f.Check + "=" + string(f.Status)
		if f.Reason != "" && (f.Verdict != None && f.Verdict != Whitelist || f.DryRun ||
			f.Status == StatusSkipped || f.Status == StatusTempError || f.Status == StatusPermError) {
			c += "/" + f.Reason
		}
		if f.Verdict == Whitelist {
			c += "/whitelist"
		}
		return c
	})
	attrs = append(attrs, slog.String("checks", checks), slog.String("ms", strings.Join(times, " ")))
	// What dry-run checks would have done, to the message and to each recipient, each note once.
	var dry []string
	seen := map[string]bool{}
	for _, note := range append(RcptDryRun(s), final.DryRun...) {
		if !seen[note] {
			seen[note] = true
			dry = append(dry, note)
		}
	}
	if len(dry) > 0 {
		attrs = append(attrs, slog.String("dry_run", strings.Join(dry, "; ")))
	}
	if len(errs) > 0 {
		attrs = append(attrs, slog.String("errors", strings.Join(errs, "; ")))
	}
	attrs = append(attrs, slog.Int64("total_ms", time.Since(s.Start).Milliseconds()))
	log.LogAttrs(context.Background(), level, "message", attrs...)
}

func clientString(s *Session) string {
	ip := "local"
	if s.ClientIP.IsValid() {
		ip = s.ClientIP.String()
	}
	if s.ClientName != "" && s.ClientName != "["+ip+"]" {
		return s.ClientName + "[" + ip + "]"
	}
	return "[" + ip + "]"
}

// summaryAction is the message's action for the log line: "none" when moat gave no final answer (the MTA
// ended the session before DATA, RSET, the client went away).
func summaryAction(final Decision) string {
	if final.Action == ActContinue {
		return "none"
	}
	return final.Action.String()
}

// rcptSummary lists each recipient with what became of it: its own refusal at RCPT, or, once accepted there,
// the message's answer (a message refused at end of message refuses every recipient).
func rcptSummary(s *Session, final Decision) string {
	parts := make([]string, 0, len(s.Rcpts))
	for _, r := range s.Rcpts {
		d := r.Decision
		if r.Accepted() && final.Action != ActContinue {
			d = final
		}
		p := r.Addr.String() + ":" + summaryAction(d)
		if d.Reason != "" && d.Action != ActContinue {
			p += "(" + d.Check + "/" + d.Reason + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ",")
}

// formatByStage lists findings grouped by stage, in stage order, each check once per stage:
// "connect(relay=none) rcpt(relay=pass recipients=pass)". A check with several results in one stage (one per
// recipient, several lists) shows each different one, joined by "|". sep separates the checks of a stage.
func formatByStage(fs []Finding, sep string, format func(Finding) string) string {
	type checkResults struct {
		name    string
		results []string
	}
	var byStage [StageEOM + 1][]*checkResults
	for _, f := range fs {
		if f.Stage < 0 || f.Stage > StageEOM {
			continue
		}
		var cr *checkResults
		for _, c := range byStage[f.Stage] {
			if c.name == f.Check {
				cr = c
				break
			}
		}
		if cr == nil {
			cr = &checkResults{name: f.Check}
			byStage[f.Stage] = append(byStage[f.Stage], cr)
		}
		res := strings.TrimPrefix(format(f), f.Check)
		if !slices.Contains(cr.results, res) {
			cr.results = append(cr.results, res)
		}
	}
	var groups []string
	for st, checks := range byStage {
		if len(checks) == 0 {
			continue
		}
		items := make([]string, len(checks))
		for i, c := range checks {
			// format gives "NAME=RESULT" (or "NAME:RESULT"): the name once, then each result without its separator.
			rest := make([]string, len(c.results))
			for j, r := range c.results {
				if j > 0 && r != "" {
					r = r[1:]
				}
				rest[j] = r
			}
			items[i] = c.name + strings.Join(rest, "|")
		}
		groups = append(groups, Stage(st).String()+"("+strings.Join(items, sep)+")")
	}
	return strings.Join(groups, " ")
}
