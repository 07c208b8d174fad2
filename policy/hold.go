package policy

import (
	"context"
	"time"
)

// Holder keeps a message that the policy step quarantined: the quarantine service, which cmd/moat builds from
// the [quarantine] table and hands to Build through Services. Without one, a quarantine verdict only asks the
// MTA to put the message in its hold queue.
type Holder interface {
	// Hold keeps the message of req. It returns only once the message is safely stored (committed), so that
	// the MTA may be told to drop it; an error means the message is not kept.
	Hold(ctx context.Context, req HoldRequest) (HoldResult, error)
}

// HoldRequest is what a Holder keeps: the session facts, the verdict and the message as received.
type HoldRequest struct {
	Ref        string
	Time       time.Time
	QueueID    string
	ClientAddr string // the client's IP address, "" for a local submission
	ClientName string
	Helo       string
	Sender     string   // the envelope sender, "" for the null sender
	Recipients []string // the accepted envelope recipients
	// Kind is "virus" (a virus check decided), "spam" (the score or an anti-spam scanner decided) or "policy".
	Kind    string
	Reasons []string // the deciding reason first ("policy/quarantine_score"), then each check that spoke
	Score   float64
	Checks  []HoldCheck
	// AddedHeaders are the header fields moat would have added to the message (its verdict headers).
	AddedHeaders []Header
	// Message is the message exactly as the MTA passed it: the header block, the empty line, the body.
	Message Message
}

// HoldCheck is one check's result for the message.
type HoldCheck struct {
	Check, Stage, Status, Verdict, Reason string
	Score                                 float64
}

// HoldResult says what the MTA is to do with a held message.
type HoldResult struct {
	// Discard: the holder kept the message itself; the MTA accepts it and drops it (SMFIR_DISCARD). Otherwise
	// the MTA puts it in its hold queue, as without a holder.
	Discard bool
}

// holdRequest builds the request for the quarantined outcome out of session s.
func holdRequest(s *Session, out Outcome, m Message) HoldRequest {
	req := HoldRequest{Ref: s.Ref, Time: time.Now(), QueueID: s.QueueID, ClientName: s.ClientName, Helo: s.Helo,
		Sender: s.From.String(), Score: out.Score, Message: m, Kind: "policy"}
	if s.From.Null() {
		req.Sender = ""
	}
	if s.ClientIP.IsValid() {
		req.ClientAddr = s.ClientIP.String()
	}
	for _, r := range s.AcceptedRcpts() {
		req.Recipients = append(req.Recipients, r.Addr.String())
	}
	req.AddedHeaders = append(append(req.AddedHeaders, out.InsertHeaders...), out.AddHeaders...)
	req.Reasons = []string{out.Check + "/" + out.Reason}
	all := s.Findings()
	for _, r := range s.AcceptedRcpts() {
		all = append(all, r.Findings...)
	}
	var decider *Finding
	for i, f := range all {
		req.Checks = append(req.Checks, HoldCheck{Check: f.Check, Stage: f.Stage.String(), Status: string(f.Status),
			Verdict: f.Verdict.String(), Reason: f.Reason, Score: NormalizeScore(f.Score)})
		if f.Check == out.Check && f.Reason == out.Reason && decider == nil {
			decider = &all[i]
			continue
		}
		if (f.Verdict != None && f.Verdict != Whitelist) || f.Score != 0 {
			req.Reasons = append(req.Reasons, f.Check+"/"+f.Reason+" (score "+FormatScore(f.Score)+")")
		}
	}
	switch {
	case out.Check == ScoreCheck:
		req.Kind = "spam"
	case decider != nil && decider.Kind == KindVirus:
		req.Kind = "virus"
	case decider != nil && decider.Kind == KindAntispam && decider.Scored:
		req.Kind = "spam"
	}
	return req
}

// hold hands a quarantined message to the holder. It returns the outcome to answer: the same quarantine
// (Stored set when the holder kept it), or, when the holder could not take it, a tempfail with the reference
// id, so that the client retries and nothing is lost.
func (t *Transaction) hold(ctx context.Context, out Outcome) Outcome {
	h := t.eng.holder
	if h == nil || t.s.ReadOnly {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, t.eng.Settings.MessageTimeout.D())
	defer cancel()
	res, err := h.Hold(ctx, holdRequest(t.s, out, t.body))
	if err != nil {
		t.eng.log.Error("quarantining the message failed", "ref", t.s.Ref, "err", err)
		d := Decision{Action: ActTempfail, Check: "quarantine", Reason: "store-error", DryRun: out.DryRun,
			Reply: Reply{Code: 451, Enhanced: "4.3.0", Text: "Message could not be quarantined, please try again later (ref=" + t.s.Ref + ")"}}
		return Outcome{Decision: d, Score: out.Score}
	}
	out.Stored = res.Discard
	return out
}
