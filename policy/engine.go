package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/moatmail/moat/internal/addr"
)

// Engine runs the configured checks stage by stage and applies the policy step. One Engine exists per loaded
// configuration; a reload builds a new one and retires the old one when its last session ends.
type Engine struct {
	Settings Settings
	params   Params
	entries  []*entry
	byStage  [StageEOM + 1][]*entry
	owned    []string
	env      *Env
	log      *slog.Logger
	holder   Holder // the quarantine, nil without [quarantine]

	mu      sync.Mutex
	users   int
	retired bool
	closed  sync.Once
}

// Acquire marks the engine in use by a session and reports whether it may be used: a retired engine that
// has no users left is closed, and the caller must load the current one again. Release ends a use.
func (e *Engine) Acquire() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.retired && e.users == 0 {
		return false
	}
	e.users++
	return true
}

// Release ends a use started with Acquire; the last user of a retired engine closes it.
func (e *Engine) Release() {
	e.mu.Lock()
	e.users--
	last := e.users == 0 && e.retired
	e.mu.Unlock()
	if last {
		e.close()
	}
}

// Retire marks the engine as replaced (reload or shutdown); it closes once no session uses it.
func (e *Engine) Retire() {
	e.mu.Lock()
	e.retired = true
	idle := e.users == 0
	e.mu.Unlock()
	if idle {
		e.close()
	}
}

func (e *Engine) close() {
	e.closed.Do(func() {
		for _, en := range e.entries {
			if c, ok := en.check.(Closer); ok {
				if err := c.Close(); err != nil {
					e.log.Warn("closing check", "check", en.name, "err", err)
				}
			}
		}
		if err := e.env.close(); err != nil {
			e.log.Warn("closing shared services", "err", err)
		}
	})
}

// Health reports whether the shared services of the engine's checks (the state store) answer; the error
// names each that does not.
func (e *Engine) Health(ctx context.Context) error { return e.env.health(ctx) }

// Connect runs the connect-stage checks.
func (e *Engine) Connect(ctx context.Context, s *Session) Decision {
	return e.envelopeStage(ctx, StageConnect, s)
}

// Helo runs the helo-stage checks. s.Helo is set by the caller.
func (e *Engine) Helo(ctx context.Context, s *Session) Decision {
	return e.envelopeStage(ctx, StageHelo, s)
}

// Mail starts a new message with the envelope sender raw (as the MTA passed it, without angle brackets) and
// runs the mail-stage checks. A malformed address is refused here, with a reference id like any rejection.
func (e *Engine) Mail(ctx context.Context, s *Session, raw, args string) Decision {
	s.ResetMessage()
	from, err := addr.Parse(raw)
	s.MailArgs = args
	if err != nil {
		f := Rejectf(StatusPermError, "bad-sender-syntax", 553, "5.1.7", "<%s>: malformed sender address", ReplySafe(raw))
		f.Err = err
		return e.decideNow(StageMail, s, nil, f)
	}
	s.From = from
	return e.envelopeStage(ctx, StageMail, s)
}

// Rcpt adds a recipient and runs the rcpt-stage checks for it; the decision applies to this recipient only.
// The recipient is appended to s.Rcpts with its decision.
func (e *Engine) Rcpt(ctx context.Context, s *Session, raw, args string) (*Recipient, Decision) {
	a, err := addr.Parse(raw)
	r := &Recipient{Addr: a, Args: args}
	s.Rcpts = append(s.Rcpts, r)
	if err != nil || a.Null() {
		if err == nil {
			err = addr.ErrMalformed
		}
		f := Rejectf(StatusPermError, "bad-recipient-syntax", 553, "5.1.3", "<%s>: malformed recipient address", ReplySafe(raw))
		f.Err = err
		r.Decision = e.decideNow(StageRcpt, s, r, f)
		return r, r.Decision
	}
	e.run(ctx, StageRcpt, s, r)
	r.Decision = Analyze(Input{Stage: StageRcpt, Ref: s.Ref, Whitelisted: s.Whitelisted(r), Findings: rcptFindings(s, r)}, e.params)
	return r, r.Decision
}

// Headers runs the header-stage checks once s.Headers is complete, and opens the body streams of the checks
// that read the message as it arrives.
func (e *Engine) Headers(ctx context.Context, s *Session) Decision {
	d := e.envelopeStage(ctx, StageHeaders, s)
	if d.Action != ActContinue {
		return d
	}
	wl := s.Whitelisted(nil)
	for _, en := range e.byStage[StageEOM] {
		bs, ok := en.check.(BodyStreamer)
		if !ok || (wl && en.kind == KindAntispam) {
			continue
		}
		var stream BodyStream
		func() {
			defer func() {
				if p := recover(); p != nil {
					e.log.Error("check panicked", "check", en.name, "stage", "body", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					notePanic()
					stream = panicStream{fmt.Sprint(p)}
				}
			}()
			stream = bs.StartBody(ctx, s)
		}()
		if stream != nil {
			s.streams = append(s.streams, streamEntry{en: en, stream: stream})
		}
	}
	return d
}

// WriteBody hands message bytes (the header block first, then the body) to the open body streams.
func (e *Engine) WriteBody(s *Session, p []byte) {
	for i := range s.streams {
		st := &s.streams[i]
		if st.failed {
			continue
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					e.log.Error("check panicked", "check", st.en.name, "stage", "body", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
					notePanic()
					st.failed = true
					st.stream = panicStream{fmt.Sprint(r)}
				}
			}()
			if _, err := st.stream.Write(p); err != nil {
				st.failed = true
				st.err = err
			}
		}()
	}
}

// Abort ends the message in progress without a decision (RSET, client gone); it closes the body streams.
func (e *Engine) Abort(s *Session) {
	if len(s.streams) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, st := range s.streams {
		func() {
			defer func() { _ = recover() }()
			st.stream.Finish(ctx)
		}()
	}
	s.streams = nil
}

type streamEntry struct {
	en     *entry
	stream BodyStream
	failed bool
	err    error
}

type panicStream struct{ msg string }

func (panicStream) Write(p []byte) (int, error) { return len(p), nil }
func (p panicStream) Finish(context.Context) []Finding {
	return []Finding{panicFinding(p.msg)}
}

// Outcome is the end-of-message result: the decision and the header changes to make when the message is
// accepted.
type Outcome struct {
	Decision
	Score         float64
	AddHeaders    []Header    // append at the end of the header block
	InsertHeaders []Header    // insert at the top, in this order
	RemoveHeaders []HeaderRef // delete these incoming header fields
	// Stored, on a quarantine, says the quarantine kept the message itself: the MTA is to accept it and drop
	// it (discard) rather than put it in its hold queue.
	Stored bool
}

// HeaderRef names one header field by name and its 1-based index among the fields of that name, which is
// how the milter protocol addresses header changes.
type HeaderRef struct {
	Name  string
	Index int
}

// EOM runs the end-of-message checks in three phases: the body streams finish, in parallel; then the message
// checkers run in order, each seeing the findings before it; then the content scanners run, in parallel. It
// applies the policy step and composes the headers.
func (e *Engine) EOM(ctx context.Context, s *Session, m Message) Outcome {
	s.setStage(StageEOM)
	ctx, cancel := context.WithTimeout(ctx, e.Settings.MessageTimeout.D())
	defer cancel()
	// Phase 1: the body streams finish, in parallel.
	streams := s.streams
	s.streams = nil
	var jobs []eomJob
	for _, st := range streams {
		st := st
		jobs = append(jobs, eomJob{st.en, func(ctx context.Context) []Finding {
			fs := st.stream.Finish(ctx)
			if st.err != nil {
				fs = append(fs, Finding{Status: StatusTempError, Reason: "stream-error", Err: st.err})
			}
			return fs
		}})
	}
	s.addFindings(StageEOM, e.parallel(ctx, s, jobs))
	// Phase 2: message checkers, in order, each seeing the findings before it.
	for _, en := range e.byStage[StageEOM] {
		mc, ok := en.check.(MessageChecker)
		if !ok || (en.kind == KindAntispam && s.Whitelisted(nil)) {
			continue
		}
		s.addFindings(StageEOM, e.call(ctx, en, StageEOM, s, nil, func(ctx context.Context) []Finding { return mc.Message(ctx, s, m) }))
	}
	// Phase 3: content scanners, in parallel.
	wl := s.Whitelisted(nil)
	jobs = nil
	for _, en := range e.byStage[StageEOM] {
		sc, ok := en.check.(ContentScanner)
		if !ok || (wl && en.kind == KindAntispam) {
			continue
		}
		jobs = append(jobs, eomJob{en, func(ctx context.Context) []Finding { return sc.Scan(ctx, s, m) }})
	}
	s.addFindings(StageEOM, e.parallel(ctx, s, jobs))

	all := s.Findings()
	score, scored := 0.0, false
	var counted []Finding
	for _, f := range all {
		// Anti-spam and virus-kind scores count (an attachment rule's score:N acts for white-listed senders
		// too); access control never scores.
		if (f.Kind == KindAntispam || f.Kind == KindVirus) && !f.DryRun {
			score += f.Score
		}
		if f.Scored {
			scored = true
		}
		if f.Stage >= StageHeaders || f.Verdict == Quarantine || f.Verdict == Discard {
			counted = append(counted, f)
		}
	}
	for _, r := range s.AcceptedRcpts() {
		for _, f := range r.Findings {
			if f.Verdict == Quarantine || f.Verdict == Discard {
				counted = append(counted, f)
			}
		}
	}
	score = NormalizeScore(score)
	d := Analyze(Input{Stage: StageEOM, Ref: s.Ref, Findings: counted, Whitelisted: wl, Score: score}, e.params)
	d.DryRun = append(RcptDryRun(s), d.DryRun...)
	out := Outcome{Decision: d, Score: score}
	if d.Action == ActAccept {
		e.runAcceptHooks(ctx, s)
	}
	if d.Action == ActReject || d.Action == ActTempfail || d.Action == ActDiscard {
		return out
	}
	e.composeHeaders(s, &out, all, scored, wl)
	return out
}

// runAcceptHooks calls the OnAccept hooks of the message's findings and of its accepted recipients', once the
// verdict accepted the message. A hook that fails or panics is logged; the message stays accepted.
func (e *Engine) runAcceptHooks(ctx context.Context, s *Session) {
	fs := s.Findings()
	for _, r := range s.AcceptedRcpts() {
		fs = append(fs, r.Findings...)
	}
	for _, f := range fs {
		if f.OnAccept == nil {
			continue
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					e.log.Error("check panicked after the message was accepted", "ref", s.Ref, "check", f.Check,
						"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				}
			}()
			if err := f.OnAccept(ctx); err != nil {
				e.log.Warn("recording the accepted message failed", "ref", s.Ref, "check", f.Check, "err", err)
			}
		}()
	}
}

// RcptDryRun lists what dry-run checks would have done to the recipients of the message.
func RcptDryRun(s *Session) []string {
	var out []string
	for _, r := range s.Rcpts {
		for _, note := range r.Decision.DryRun {
			out = append(out, r.Addr.String()+": "+note)
		}
	}
	return out
}

type eomJob struct {
	en  *entry
	run func(context.Context) []Finding
}

// parallel runs end-of-message jobs at the same time and returns their findings in job order.
func (e *Engine) parallel(ctx context.Context, s *Session, jobs []eomJob) []Finding {
	results := make([][]Finding, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = e.call(ctx, j.en, StageEOM, s, nil, j.run)
		}()
	}
	wg.Wait()
	var out []Finding
	for _, fs := range results {
		out = append(out, fs...)
	}
	return out
}

func (e *Engine) envelopeStage(ctx context.Context, stage Stage, s *Session) Decision {
	fs := e.run(ctx, stage, s, nil)
	return Analyze(Input{Stage: stage, Ref: s.Ref, Findings: fs, Whitelisted: s.Whitelisted(nil)}, e.params)
}

// decideNow records a finding made by the engine itself (malformed address) and answers from it.
func (e *Engine) decideNow(stage Stage, s *Session, r *Recipient, f Finding) Decision {
	f.Check, f.Stage, f.Kind = "moat", stage, KindAccess
	if r != nil {
		r.Findings = append(r.Findings, f)
	} else {
		s.addFindings(stage, []Finding{f})
	}
	return Analyze(Input{Stage: stage, Ref: s.Ref, Findings: []Finding{f}}, e.params)
}

// run runs the checks of one envelope stage in order; each sees the findings of the ones before it.
func (e *Engine) run(ctx context.Context, stage Stage, s *Session, r *Recipient) []Finding {
	s.setStage(stage)
	// One deadline for the whole stage: the MTA waits for one answer per SMTP command.
	ctx, cancel := context.WithTimeout(ctx, e.Settings.StageTimeout.D())
	defer cancel()
	var out []Finding
	for _, en := range e.byStage[stage] {
		if en.kind == KindAntispam && s.Whitelisted(r) {
			continue
		}
		var call func(context.Context) []Finding
		switch stage {
		case StageConnect:
			call = func(ctx context.Context) []Finding { return en.check.(ConnectChecker).Connect(ctx, s) }
		case StageHelo:
			call = func(ctx context.Context) []Finding { return en.check.(HeloChecker).Helo(ctx, s) }
		case StageMail:
			call = func(ctx context.Context) []Finding { return en.check.(MailChecker).Mail(ctx, s) }
		case StageRcpt:
			call = func(ctx context.Context) []Finding { return en.check.(RcptChecker).Rcpt(ctx, s, r) }
		case StageHeaders:
			call = func(ctx context.Context) []Finding { return en.check.(HeaderChecker).Headers(ctx, s) }
		}
		fs := e.call(ctx, en, stage, s, r, call)
		if r != nil {
			r.Findings = append(r.Findings, fs...)
		} else {
			s.addFindings(stage, fs)
		}
		out = append(out, fs...)
	}
	return out
}

// call runs one check under its deadline: the check's own timeout, within what is left of the stage's. A
// panic becomes a tempfail finding for this message (the daemon lives on), logged with its stack. A check that
// overruns its deadline (one that ignores its context) is abandoned and answered for with a tempfail, so that
// a hung dependency never holds the SMTP session until the MTA gives up on moat.
func (e *Engine) call(ctx context.Context, en *entry, stage Stage, s *Session, r *Recipient, fn func(context.Context) []Finding) []Finding {
	cctx := ctx
	var cancel context.CancelFunc = func() {}
	if en.timeout > 0 {
		cctx, cancel = context.WithTimeout(ctx, en.timeout)
	}
	defer cancel()
	if en.dryRun {
		cctx = context.WithValue(cctx, dryRunKey{}, true)
	}
	start := time.Now()
	done := make(chan []Finding, 1)
	go func() {
		var fs []Finding
		defer func() {
			if p := recover(); p != nil {
				e.log.Error("check panicked", "ref", s.Ref, "check", en.name, "stage", stage.String(),
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				notePanic()
				fs = []Finding{panicFinding(fmt.Sprint(p))}
			}
			done <- fs
		}()
		fs = fn(cctx)
	}()
	var fs []Finding
	select {
	case fs = <-done:
	case <-cctx.Done():
		// Give a check that does honour its context a moment to return its own answer.
		select {
		case fs = <-done:
		case <-time.After(overrunGrace):
			e.log.Error("check overran its deadline; answering without it", "ref", s.Ref, "check", en.name,
				"stage", stage.String(), "after", time.Since(start).String())
			fs = []Finding{Tempfailf(StatusTempError, "timeout", 451, "4.4.3",
				"Timeout while checking the message, please try again later")}
			fs[0].Err = fmt.Errorf("%s: deadline exceeded after %s", en.name, time.Since(start).Round(time.Millisecond))
		}
	}
	elapsed := time.Since(start)
	if len(fs) == 0 {
		fs = []Finding{{Status: StatusNone}}
	}
	for i := range fs {
		f := &fs[i]
		f.Check, f.Stage, f.Kind, f.Elapsed = en.name, stage, en.kind, elapsed
		if en.dryRun && f.Verdict != None && f.Verdict != Whitelist {
			f.DryRun, f.WouldBe, f.Verdict = true, f.Verdict, None
		}
		if en.dryRun && f.Correspondent {
			// A mark acts on the checks after it (greylisting), so in dry run it is only noted.
			f.Correspondent = false
			f.Detail = strings.TrimSpace(f.Detail + " dry-run: correspondent not marked")
		}
	}
	if o := observe(); o != nil {
		observeCheck(o, en.name, stage, elapsed, fs)
	}
	return fs
}

// overrunGrace is how long a check whose deadline passed may still take to return its own answer.
const overrunGrace = 250 * time.Millisecond

type dryRunKey struct{}

// InDryRun reports whether the check called with ctx runs in dry-run mode: its verdicts will not act, so a
// check with side effects (greylisting's state, headers that claim an action) should not pretend they did.
func InDryRun(ctx context.Context) bool {
	v, _ := ctx.Value(dryRunKey{}).(bool)
	return v
}

func panicFinding(msg string) Finding {
	return Finding{Status: StatusTempError, Verdict: Tempfail, Reason: "internal-error",
		Err:   errors.New("check panicked: " + msg),
		Reply: Reply{Code: 451, Enhanced: "4.3.0", Text: "Internal error while checking the message, please try again later"}}
}

func (s *Session) setStage(st Stage) {
	s.mu.Lock()
	s.stage = st
	s.mu.Unlock()
}
