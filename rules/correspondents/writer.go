package correspondents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/moatmail/moat/store"
)

// maxBatch is how many messages' records one store write carries at most.
const maxBatch = 256

// writer writes records in the background, so that recording never holds up an SMTP session: whatever is
// queued when it wakes goes to the store in one write. A full queue drops the record (logged): a slow store
// must not slow outbound mail.
type writer struct {
	st  store.Correspondents
	log *slog.Logger
	q   chan []store.CorrRecord // one message's records

	mu      sync.Mutex
	closed  bool
	pending int           // records queued and not yet written
	idle    chan struct{} // closed and replaced when pending drops to 0
	done    chan struct{}
	dropped int
}

func startWriter(st store.Correspondents, size int, log *slog.Logger) *writer {
	w := &writer{st: st, log: log, q: make(chan []store.CorrRecord, size), idle: make(chan struct{}), done: make(chan struct{})}
	close(w.idle)
	go w.run()
	return w
}

// enqueue queues one message's records (written together) and reports whether there was room.
func (w *writer) enqueue(recs []store.CorrRecord) bool {
	var r []store.CorrRecord
	for _, rec := range recs {
		if len(rec.Keys) > 0 {
			r = append(r, rec)
		}
	}
	if len(r) == 0 {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	select {
	case w.q <- r:
		if w.pending == 0 {
			w.idle = make(chan struct{})
		}
		w.pending++
		return true
	default:
		w.dropped++
		if w.dropped == 1 || w.dropped%1000 == 0 {
			w.log.Warn("correspondents: the store writer is behind; records dropped", "dropped", w.dropped)
		}
		return false
	}
}

func (w *writer) run() {
	defer close(w.done)
	for r := range w.q {
		batch, n := append([]store.CorrRecord(nil), r...), 1
	more:
		for n < maxBatch {
			select {
			case r, ok := <-w.q:
				if !ok {
					break more
				}
				batch, n = append(batch, r...), n+1
			default:
				break more
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := w.st.RecordCorrespondents(ctx, batch)
		cancel()
		if err != nil {
			w.log.Warn("correspondents: recording failed", "messages", n, "err", err)
		}
		w.mu.Lock()
		w.pending -= n
		if w.pending == 0 {
			close(w.idle)
		}
		w.mu.Unlock()
	}
}

// flush waits until every record queued before the call is written.
func (w *writer) flush(ctx context.Context) error {
	w.mu.Lock()
	idle := w.idle
	w.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("correspondents: flush: %w", ctx.Err())
	}
}

// close stops taking records and waits up to timeout for the queued ones to be written.
func (w *writer) close(timeout time.Duration) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	close(w.q)
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-time.After(timeout):
		return errors.New("correspondents: records still unwritten at shutdown")
	}
}
