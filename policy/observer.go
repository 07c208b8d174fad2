package policy

import (
	"sync/atomic"
	"time"
)

// Observer is told what the engine does, so that a monitoring package (metrics) can count it without the
// engine or the checks knowing how it is exported. Calls come from many sessions at once and must be cheap:
// they sit on the path of every message.
type Observer interface {
	// CheckDone is called once per run of a check, with the time it took and the findings it returned.
	CheckDone(check string, stage Stage, elapsed time.Duration, findings []Finding)
	// MessageDone is called once per message, when its summary line is written.
	MessageDone(s *Session, final Decision)
	// Panicked is called for each panic the engine turned into a tempfail.
	Panicked()
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
