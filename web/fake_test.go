package web

import (
	"context"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/moatmail/moat/quarantine"
)

// fakeQuarantine keeps records and messages in memory and records every action, for the handlers' tests.
type fakeQuarantine struct {
	mu      sync.Mutex
	recs    map[string]quarantine.Record
	bodies  map[string]string
	calls   []string // "action id actor-name rcpts"
	queries []quarantine.Query
}

func newFake() *fakeQuarantine {
	return &fakeQuarantine{recs: map[string]quarantine.Record{}, bodies: map[string]string{}}
}

func (f *fakeQuarantine) add(rec quarantine.Record, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[rec.ID] = rec
	f.bodies[rec.ID] = body
}

func (f *fakeQuarantine) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeQuarantine) List(_ context.Context, q quarantine.Query) ([]quarantine.Record, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	var out []quarantine.Record
	for _, r := range f.recs {
		if q.RcptExact != "" && !hasRcpt(r, q.RcptExact) {
			continue
		}
		if q.Kind != "" && r.Kind != q.Kind {
			continue
		}
		if q.Sender != "" && !strings.Contains(strings.ToLower(r.Sender), strings.ToLower(q.Sender)) {
			continue
		}
		out = append(out, r)
	}
	total := len(out)
	if q.Offset < len(out) {
		out = out[q.Offset:]
	} else {
		out = nil
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, total, nil
}

func hasRcpt(r quarantine.Record, addr string) bool {
	for _, rc := range r.Recipients {
		if strings.EqualFold(rc.Addr, addr) {
			return true
		}
	}
	return false
}

func (f *fakeQuarantine) Get(_ context.Context, id string) (quarantine.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.recs[id]
	if !ok {
		return r, quarantine.ErrNotFound
	}
	return r, nil
}

func (f *fakeQuarantine) Open(_ context.Context, id string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.bodies[id]
	if !ok {
		return nil, quarantine.ErrNotFound
	}
	return io.NopCloser(strings.NewReader(b)), nil
}

func (f *fakeQuarantine) record(action, id string, by quarantine.Actor, rcpts []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.recs[id]; !ok {
		return quarantine.ErrNotFound
	}
	if f.recs[id].Kind == quarantine.KindVirus && !by.Admin && action != "delete" {
		return quarantine.ErrForbidden
	}
	f.calls = append(f.calls, action+" "+id+" "+by.Name+" "+strings.Join(rcpts, ","))
	return nil
}

func (f *fakeQuarantine) Release(_ context.Context, id string, rcpts []string, by quarantine.Actor) ([]quarantine.Recipient, error) {
	if err := f.record("release", id, by, rcpts); err != nil {
		return nil, err
	}
	return []quarantine.Recipient{{Addr: "x@example.org", State: quarantine.StateReleased, Reply: "250 2.0.0 Ok"}}, nil
}

func (f *fakeQuarantine) Delete(_ context.Context, id string, rcpts []string, by quarantine.Actor) error {
	return f.record("delete", id, by, rcpts)
}

func (f *fakeQuarantine) MarkSpam(_ context.Context, id string, by quarantine.Actor) error {
	return f.record("spam", id, by, nil)
}

func (f *fakeQuarantine) MarkHam(_ context.Context, id string, rcpts []string, whitelist bool, by quarantine.Actor) ([]quarantine.Recipient, error) {
	action := "ham"
	if whitelist {
		action = "ham+whitelist"
	}
	return nil, f.record(action, id, by, rcpts)
}

func (f *fakeQuarantine) HeldRecipients(_ context.Context, since time.Time) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, r := range f.recs {
		for _, rc := range r.Recipients {
			if rc.State == quarantine.StateHeld && !r.Time.Before(since) && !seen[rc.Addr] {
				seen[rc.Addr] = true
				out = append(out, rc.Addr)
			}
		}
	}
	return out, nil
}
