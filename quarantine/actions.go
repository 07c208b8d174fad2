package quarantine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/moatmail/moat/scanners/spamc"
	"github.com/moatmail/moat/store"
)

// ErrNoWhitelist is returned by MarkHam with whitelist: this build keeps no learned white list yet.
var ErrNoWhitelist = errors.New("quarantine: the learned white list is not available in this build")

// matches reports whether rec is selected by qu.
func (qu Query) matches(rec Record) bool {
	fold := func(s, sub string) bool {
		return sub == "" || strings.Contains(strings.ToLower(s), strings.ToLower(sub))
	}
	if !fold(rec.Sender, qu.Sender) || (qu.Kind != "" && rec.Kind != qu.Kind) {
		return false
	}
	if qu.Text != "" && !fold(rec.Subject, qu.Text) && !fold(rec.From, qu.Text) && !fold(rec.Sender, qu.Text) {
		return false
	}
	if (!qu.Since.IsZero() && rec.Time.Before(qu.Since)) || (!qu.Until.IsZero() && !rec.Time.Before(qu.Until)) {
		return false
	}
	rcptOK, stateOK := qu.Rcpt == "" && qu.RcptExact == "", false
	want := qu.State
	if want == "" {
		want = StateHeld
	}
	for _, r := range rec.Recipients {
		if qu.RcptExact != "" && !strings.EqualFold(r.Addr, qu.RcptExact) {
			continue
		}
		if qu.Rcpt != "" && !fold(r.Addr, qu.Rcpt) {
			continue
		}
		rcptOK = true
		stateOK = stateOK || r.State == want
	}
	return rcptOK && stateOK
}

// List returns the records that match qu (a page of them) and how many match in all. The records are read
// from the store and filtered here: a quarantine holds thousands of messages, not millions.
func (q *Quarantine) List(ctx context.Context, qu Query) (recs []Record, total int, err error) {
	st, err := q.st()
	if err != nil {
		return nil, 0, err
	}
	var decodeErr error
	err = st.QuarScan(ctx, func(m store.HeldMessage) bool {
		rec, err := decode(m)
		if err != nil {
			decodeErr = err
			return true
		}
		if qu.matches(rec) {
			recs = append(recs, rec)
		}
		return true
	})
	if err != nil {
		return nil, 0, fmt.Errorf("quarantine: %w", err)
	}
	if decodeErr != nil {
		q.log.Warn("quarantine: unreadable record skipped", "err", decodeErr)
	}
	less := map[string]func(a, b Record) bool{
		"time":    func(a, b Record) bool { return a.Time.Before(b.Time) },
		"sender":  func(a, b Record) bool { return strings.ToLower(a.Sender) < strings.ToLower(b.Sender) },
		"subject": func(a, b Record) bool { return strings.ToLower(a.Subject) < strings.ToLower(b.Subject) },
		"score":   func(a, b Record) bool { return a.Score < b.Score },
		"size":    func(a, b Record) bool { return a.Size < b.Size },
	}[qu.Sort]
	if less == nil {
		less = func(a, b Record) bool { return a.Time.Before(b.Time) }
	}
	sort.SliceStable(recs, func(i, j int) bool {
		if qu.Desc {
			return less(recs[j], recs[i])
		}
		return less(recs[i], recs[j])
	})
	total = len(recs)
	limit := qu.Limit
	if limit <= 0 {
		limit = 50
	}
	start := min(max(qu.Offset, 0), total)
	return recs[start:min(start+limit, total)], total, nil
}

// choose returns the recipients of rec that the actor acts on: rcpts (nil: every held one), limited to the
// actor's own address for a recipient session.
func choose(rec Record, rcpts []string, by Actor) ([]string, error) {
	if by.Recipient != "" {
		for _, r := range rcpts {
			if !strings.EqualFold(r, by.Recipient) {
				return nil, fmt.Errorf("%w: %s may act only on its own copy", ErrForbidden, by.Recipient)
			}
		}
		rcpts = []string{by.Recipient}
	}
	var out []string
	for _, r := range rec.Recipients {
		if r.State != StateHeld {
			continue
		}
		if rcpts == nil || slices.ContainsFunc(rcpts, func(a string) bool { return strings.EqualFold(a, r.Addr) }) {
			out = append(out, r.Addr)
		}
	}
	for _, a := range rcpts {
		if !slices.ContainsFunc(rec.Recipients, func(r Recipient) bool { return strings.EqualFold(a, r.Addr) }) {
			return nil, fmt.Errorf("quarantine: %s is not a recipient of %s", a, rec.ID)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("quarantine: %s: no held recipient to act on", rec.ID)
	}
	return out, nil
}

// setStates records new states of recipients of id atomically; changes maps an address to its new
// recipient entry (State, Reply). Once no recipient is held or released the message goes entirely.
func (q *Quarantine) setStates(ctx context.Context, id string, by Actor, changes map[string]Recipient) (Record, error) {
	st, err := q.st()
	if err != nil {
		return Record{}, err
	}
	var rec Record
	now := q.now()
	err = st.QuarUpdate(ctx, id, func(m *store.HeldMessage) error {
		r, err := decode(*m)
		if err != nil {
			return err
		}
		held := false
		for i := range r.Recipients {
			rc := &r.Recipients[i]
			if c, ok := changes[strings.ToLower(rc.Addr)]; ok {
				if c.State != rc.State {
					rc.State, rc.Changed, rc.By = c.State, now, by.Name
				}
				rc.Reply = c.Reply
			}
			held = held || rc.State == StateHeld
		}
		meta, err := json.Marshal(r)
		if err != nil {
			return err
		}
		m.Meta, m.Held, rec = meta, held, r
		return nil
	})
	if err != nil {
		return Record{}, errStore(err)
	}
	gone := true
	for _, r := range rec.Recipients {
		gone = gone && r.State == StateDeleted
	}
	if gone {
		if err := st.QuarDelete(ctx, id); err != nil {
			return rec, err
		}
	}
	q.updateReport(ctx)
	return rec, nil
}

// Delete marks rcpts' copies deleted (nil: every held recipient); the message goes once every recipient's
// copy is deleted.
func (q *Quarantine) Delete(ctx context.Context, id string, rcpts []string, by Actor) error {
	rec, err := q.Get(ctx, id)
	if err != nil {
		return err
	}
	chosen, err := choose(rec, rcpts, by)
	if err != nil {
		return err
	}
	changes := map[string]Recipient{}
	for _, a := range chosen {
		changes[strings.ToLower(a)] = Recipient{State: StateDeleted}
	}
	if _, err := q.setStates(ctx, id, by, changes); err != nil {
		return err
	}
	q.log.Info("quarantine: deleted", "ref", id, "by", by.Name, "rcpts", strings.Join(chosen, ","))
	return nil
}

// MarkSpam tells spamd the message is spam (TELL) and deletes it.
func (q *Quarantine) MarkSpam(ctx context.Context, id string, by Actor) error {
	changed, err := q.tell(ctx, id, spamc.Spam)
	if err != nil {
		return err
	}
	q.log.Info("quarantine: learned", "ref", id, "by", by.Name, "class", "spam", "changed", changed)
	return q.Delete(ctx, id, nil, by)
}

// MarkHam releases the message, tells spamd it is ham and, with whitelist, adds the sender to the learned
// white list (consulted by senderlists with SPF/DKIM proof).
func (q *Quarantine) MarkHam(ctx context.Context, id string, rcpts []string, whitelist bool, by Actor) ([]Recipient, error) {
	if whitelist {
		return nil, ErrNoWhitelist
	}
	changed, err := q.tell(ctx, id, spamc.Ham)
	if err != nil {
		return nil, err
	}
	q.log.Info("quarantine: learned", "ref", id, "by", by.Name, "class", "ham", "changed", changed)
	return q.Release(ctx, id, rcpts, by)
}

// Forget tells spamd to forget what it learned from the message.
func (q *Quarantine) Forget(ctx context.Context, id string, by Actor) error {
	changed, err := q.tell(ctx, id, spamc.Forget)
	if err != nil {
		return err
	}
	q.log.Info("quarantine: learned", "ref", id, "by", by.Name, "class", "forget", "changed", changed)
	return nil
}

// Purge deletes expired records and, over max_size, the oldest ones; it returns how many went.
func (q *Quarantine) Purge(ctx context.Context, now time.Time) (int, error) {
	st, err := q.st()
	if err != nil {
		return 0, err
	}
	n, err := st.QuarExpire(ctx, now)
	if err != nil {
		return n, fmt.Errorf("quarantine: purge: %w", err)
	}
	if q.cfg.MaxSize > 0 {
		_, used, err := st.QuarStats(ctx)
		if err != nil {
			return n, fmt.Errorf("quarantine: purge: %w", err)
		}
		var victims []string
		err = st.QuarScan(ctx, func(m store.HeldMessage) bool {
			if used <= int64(q.cfg.MaxSize) {
				return false
			}
			victims = append(victims, m.ID)
			used -= m.Size
			return true
		})
		if err != nil {
			return n, fmt.Errorf("quarantine: purge: %w", err)
		}
		for _, id := range victims {
			if err := st.QuarDelete(ctx, id); err != nil {
				return n, err
			}
			n++
		}
	}
	q.updateReport(ctx)
	return n, nil
}

// HeldRecipients lists the distinct held recipients in local domains with mail held since `since` (digests).
func (q *Quarantine) HeldRecipients(ctx context.Context, since time.Time) ([]string, error) {
	recs, _, err := q.List(ctx, Query{Since: since, Limit: 1 << 30})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, rec := range recs {
		for _, r := range rec.Recipients {
			a := strings.ToLower(r.Addr)
			if r.State == StateHeld && !seen[a] && q.isLocal(r.Addr) {
				seen[a] = true
				out = append(out, r.Addr)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
