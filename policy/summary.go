package policy

import (
	"context"
	"fmt"
	"log/slog"
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
		slog.String("rcpts", rcptSummary(s)),
		slog.String("action", final.Action.String()),
	}
	if !final.Reply.IsZero() {
		attrs = append(attrs, slog.String("reply", final.Reply.String()))
	}
	if final.Reason != "" {
		attrs = append(attrs, slog.String("reason", final.Check+"/"+final.Reason))
	}
	attrs = append(attrs, slog.String("score", fmt.Sprintf("%.1f", score)))
	if s.Auth.Authenticated() {
		attrs = append(attrs, slog.String("auth", s.Auth.Authen))
	}
	if s.TLS.Active() {
		attrs = append(attrs, slog.String("tls", s.TLS.Version))
	}
	var checks, times, errs []string
	spent := map[string]time.Duration{}
	var order []string
	add := func(f Finding) {
		c := f.Check + "=" + string(f.Status)
		if f.Reason != "" && (f.Verdict != None && f.Verdict != Whitelist || f.DryRun ||
			f.Status == StatusSkipped || f.Status == StatusTempError || f.Status == StatusPermError) {
			c += "/" + f.Reason
		}
		if f.Verdict == Whitelist {
			c += "/whitelist"
		}
		checks = append(checks, c)
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
	for _, f := range s.Findings() {
		add(f)
	}
	for _, r := range s.Rcpts {
		for _, f := range r.Findings {
			add(f)
		}
	}
	for _, c := range order {
		times = append(times, fmt.Sprintf("%s=%.1f", c, float64(spent[c].Microseconds())/1000))
	}
	attrs = append(attrs, slog.String("checks", strings.Join(checks, " ")), slog.String("ms", strings.Join(times, " ")))
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

func rcptSummary(s *Session) string {
	parts := make([]string, 0, len(s.Rcpts))
	for _, r := range s.Rcpts {
		p := r.Addr.String() + ":" + r.Decision.Action.String()
		if r.Decision.Reason != "" {
			p += "(" + r.Decision.Check + "/" + r.Decision.Reason + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ",")
}
