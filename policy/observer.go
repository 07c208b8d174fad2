package policy

import (
	"sync/atomic"
	"time"
)

// Observer is told what the engine does, so that a monitoring package (metrics) can count it without the
// engine or the checks knowing how it is exported. Calls come from many sessions at once and must be cheap:
// they sit on the path of every message.
//
// It speaks in plain words (stage names, statuses, actions, "check/reason"), so that the monitoring package
// needs none of policy's types and can sit below it, beside the services that report to it as well.
type Observer interface {
	// CheckDone is called once per run of a check with the time it took and the status of each finding.
	CheckDone(check, stage string, elapsed time.Duration, results []string)
	// MessageDone is called once per message, when its summary line is written: the message's action and
	// "check/reason" ("" when no check decided), and the action each recipient got.
	MessageDone(action, reason string, rcptActions []string)
	// Panicked is called for each panic the engine turned into a tempfail.
	Panicked()
}

// observeCheck reports one run of a check.
func observeCheck(o Observer, check string, stage Stage, elapsed time.Duration, fs []Finding) {
	results := make([]string, len(fs))
	for i, f := range fs {
		results[i] = string(f.Status)
		if f.Status == "" {
			results[i] = string(StatusNone)
		}
	}
	o.CheckDone(check, stage.String(), elapsed, results)
}

// observeMessage reports a message that ended with final: a refused recipient counts its own refusal, the
// others the message's answer.
func observeMessage(o Observer, s *Session, final Decision) {
	reason := ""
	if final.Reason != "" {
		reason = final.Check + "/" + final.Reason
	}
	rcpts := make([]string, len(s.Rcpts))
	for i, r := range s.Rcpts {
		a := final.Action
		if !r.Accepted() {
			a = r.Decision.Action
		}
		rcpts[i] = a.String()
	}
	o.MessageDone(final.Action.String(), reason, rcpts)
}

type observerBox struct{ o Observer }

var observer atomic.Pointer[observerBox]

// SetObserver makes o the observer of every engine; nil stops observing.
func SetObserver(o Observer) {
	if o == nil {
		observer.Store(nil)
		return
	}
	observer.Store(&observerBox{o})
}

func observe() Observer {
	if b := observer.Load(); b != nil {
		return b.o
	}
	return nil
}

// notePanic tells the observer about a panic turned into a tempfail.
func notePanic() {
	if o := observe(); o != nil {
		o.Panicked()
	}
}
