package policy

import (
	"bytes"
	"context"
	"fmt"
	"runtime/debug"

	"github.com/moatmail/moat/internal/spool"
)

// SpoolSettings says where a Transaction keeps the message while it is checked: up to Memory bytes in memory,
// the rest in a private temporary file in Dir ("" for the system's temporary directory).
type SpoolSettings struct {
	Dir    string
	Memory int64
}

// Transaction drives one SMTP session through the engine, stage by stage: connect, HELO, then for each
// message MAIL, RCPT, the header fields, the end of the header block, the body and the end of message. The
// milter and `moat scan` both feed one, so that an offline scan can never judge a message otherwise than the
// daemon does.
//
// It owns what a message needs between the stages: the header block rebuilt for the spool and the body
// streams, the spool, a spool failure (answered 451 4.3.0 with the reference id), the end-of-message call,
// and the one summary log line per message, written when the message ends whichever way: refused at MAIL or
// RCPT, discarded, refused or accepted at end of message, or ended without one (RSET, every recipient
// refused, client gone). A panic in the transaction's own work becomes a tempfail for the message, logged
// with its stack.
//
// Calls must come one at a time, in protocol order, as the MTA's do.
type Transaction struct {
	eng   *Engine
	s     *Session
	spool SpoolSettings

	inMessage bool         // MAIL FROM seen and the message not yet summarised in the log
	hdr       bytes.Buffer // the header block, rebuilt for the spool and the body streams
	body      *spool.Spool
	bodyErr   error
}

// NewTransaction starts driving session s through engine e.
func NewTransaction(e *Engine, s *Session, sp SpoolSettings) *Transaction {
	return &Transaction{eng: e, s: s, spool: sp}
}

// Session is the session the transaction drives; the caller fills its connection fields (client, TLS, AUTH,
// queue id) from what the MTA says.
func (t *Transaction) Session() *Session { return t.s }

// InMessage reports whether a message is in progress: MAIL FROM was accepted and the message has not ended.
func (t *Transaction) InMessage() bool { return t.inMessage }

// Connect runs the connect-stage checks; the caller answers the connection with the decision.
func (t *Transaction) Connect(ctx context.Context) (d Decision) {
	defer t.guard(StageConnect, &d)
	return t.eng.Connect(ctx, t.s)
}

// Helo runs the HELO-stage checks on s.Helo, set by the caller.
func (t *Transaction) Helo(ctx context.Context) (d Decision) {
	defer t.guard(StageHelo, &d)
	return t.eng.Helo(ctx, t.s)
}

// MailCommand is one MAIL FROM as the MTA passed it.
type MailCommand struct {
	From string // the envelope sender without angle brackets; "" for the null sender
	Args string // its ESMTP arguments
	// QueueID is the MTA's queue id when it knows one at MAIL already (Postfix's {i}).
	QueueID string
	// Held, when set, answers MAIL instead of the checks' decision: a refusal the caller found earlier and
	// could not give then (the milter's connect or HELO refusal when the MTA expected no reply).
	Held *Decision
}

// Mail ends the message before it, if any, starts a new one and runs the mail-stage checks. A refusal or a
// discard ends the new message at once.
func (t *Transaction) Mail(ctx context.Context, m MailCommand) (d Decision) {
	defer t.guard(StageMail, &d)
	t.finishPending()
	d = t.eng.Mail(ctx, t.s, m.From, m.Args)
	if m.Held != nil {
		d = *m.Held
	}
	t.s.QueueID = m.QueueID
	t.inMessage = true
	if d.Action == ActReject || d.Action == ActTempfail || d.Action == ActDiscard {
		t.endMessage(d, 0)
	}
	return d
}

// Rcpt runs the rcpt-stage checks for one recipient; the decision is for that recipient only, except a
// discard, which ends the message. Outside a message it answers ActContinue and records nothing.
func (t *Transaction) Rcpt(ctx context.Context, rcpt, args string) (d Decision) {
	defer t.guard(StageRcpt, &d)
	if !t.inMessage {
		return Decision{Action: ActContinue}
	}
	_, d = t.eng.Rcpt(ctx, t.s, rcpt, args)
	if d.Action == ActDiscard {
		t.endMessage(d, 0)
	}
	return d
}

// Header adds one header field as the MTA passed it: the value is everything after the colon.
func (t *Transaction) Header(name, value string) {
	t.s.Headers = append(t.s.Headers, Header{Name: name, Value: value})
	writeHeaderField(&t.hdr, name, value)
}

// EndHeaders runs the header-stage checks once every field is in, and unless they end the message, opens the
// spool and hands the header block to it and to the body streams.
func (t *Transaction) EndHeaders(ctx context.Context) (d Decision) {
	defer t.guard(StageHeaders, &d)
	d = t.eng.Headers(ctx, t.s)
	if d.Action != ActContinue {
		t.endMessage(d, 0)
		return d
	}
	t.openBody()
	return d
}

// openBody opens the spool and writes the header block, with the empty line that ends it.
func (t *Transaction) openBody() {
	t.body = spool.New(t.spool.Dir, t.spool.Memory)
	t.hdr.WriteString("\r\n")
	t.Body(t.hdr.Bytes())
	t.hdr.Reset()
}

// Body hands a chunk of the body to the spool and the body streams. A spool failure is kept for the end of
// message.
func (t *Transaction) Body(p []byte) {
	if t.body == nil {
		return
	}
	if _, err := t.body.Write(p); err != nil && t.bodyErr == nil {
		t.bodyErr = err
	}
	t.eng.WriteBody(t.s, p)
}

// BodySize is how many bytes of the message (header block included) are spooled so far.
func (t *Transaction) BodySize() int64 {
	if t.body == nil {
		return 0
	}
	return t.body.Size()
}

// EOM runs the end-of-message checks on the spooled message and ends it. A message that could not be spooled
// cannot be checked: it is answered 451 4.3.0, so that the client retries rather than have it pass unscanned.
// The caller applies the outcome's header changes when the message is accepted or quarantined.
func (t *Transaction) EOM(ctx context.Context) (out Outcome) {
	defer t.guard(StageEOM, &out.Decision)
	if t.body == nil { // the MTA skipped the header stage (no headers at all)
		t.openBody()
	}
	if t.bodyErr != nil {
		t.eng.log.Error("spooling the message failed", "ref", t.s.Ref, "err", t.bodyErr)
		d := Decision{Action: ActTempfail, Check: "moat", Reason: "spool-error",
			Reply: Reply{Code: 451, Enhanced: "4.3.0", Text: "Local error while receiving the message, please try again later (ref=" + t.s.Ref + ")"}}
		t.endMessage(d, 0)
		return Outcome{Decision: d}
	}
	out = t.eng.EOM(ctx, t.s, t.body)
	if out.Action == ActQuarantine {
		out = t.hold(ctx, out)
	}
	t.endMessage(out.Decision, out.Score)
	return out
}

// Abort ends the message in progress without an end-of-message answer (RSET, the client gone); it is
// summarised with what it got: the last recipient refusal when every recipient was refused, action=none
// otherwise.
func (t *Transaction) Abort() {
	defer func() {
		if p := recover(); p != nil {
			t.eng.log.Error("panic while ending a message", "ref", t.s.Ref, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			notePanic()
		}
	}()
	t.finishPending()
}

// Recovered turns a panic p caught by the caller while it handled stage (a name for the log: "rcpt", "body"…)
// into a tempfail, logged with its stack. It ends the message in progress, except at "rcpt", where the answer
// is for that recipient only.
func (t *Transaction) Recovered(stage string, p any) Decision {
	t.eng.log.Error("panic while handling the message", "ref", t.s.Ref, "stage", stage, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	notePanic()
	d := Decision{Action: ActTempfail, Check: "moat", Reason: "internal-error",
		Reply: Reply{Code: 451, Enhanced: "4.3.0", Text: "Internal error, please try again later (ref=" + t.s.Ref + ")"}}
	if t.inMessage && stage != StageRcpt.String() {
		t.endMessage(d, 0)
	}
	return d
}

// guard recovers a panic in a transaction step and answers it with Recovered, so that one bad message never
// takes the daemon down.
func (t *Transaction) guard(stage Stage, d *Decision) {
	if p := recover(); p != nil {
		*d = t.Recovered(stage.String(), p)
	}
}

// endMessage writes the message's summary line once and forgets the message.
func (t *Transaction) endMessage(d Decision, score float64) {
	if !t.inMessage {
		return
	}
	t.inMessage = false
	t.eng.LogMessage(t.s, d, score)
	if o := observe(); o != nil {
		observeMessage(o, t.s, d)
	}
	t.dropBody()
}

func (t *Transaction) dropBody() {
	t.eng.Abort(t.s)
	if t.body != nil {
		_ = t.body.Close()
		t.body = nil
	}
	t.bodyErr = nil
	t.hdr.Reset()
}

// finishPending summarises a message that ended without an end-of-message answer: every recipient refused,
// RSET, or the client gone.
func (t *Transaction) finishPending() {
	if !t.inMessage {
		t.dropBody()
		return
	}
	// No answer of moat's ended the message: the log line says action=none.
	d := Decision{Action: ActContinue}
	if len(t.s.AcceptedRcpts()) == 0 && len(t.s.Rcpts) > 0 {
		// Every recipient refused: the last refusal is the message's answer.
		d = t.s.Rcpts[len(t.s.Rcpts)-1].Decision
	}
	t.endMessage(d, 0)
}
