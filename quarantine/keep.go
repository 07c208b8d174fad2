package quarantine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"strings"

	"github.com/moatmail/moat/store"
)

// Source is a message to keep: a new reader from its first byte on each Open, and its size.
type Source interface {
	Open() io.Reader
	Size() int64
}

// ErrFull is returned by Keep when the message does not fit: over max_message_size, or over max_size with
// what is stored already.
var ErrFull = errors.New("quarantine: full")

// Keep stores a quarantined message and its record (Time, Recipients… filled by the caller; ID is the
// reference id). It returns once both are committed. In mode hold only the record is kept: the MTA has the
// message.
func (q *Quarantine) Keep(ctx context.Context, rec Record, msg Source) error {
	st, err := q.st()
	if err != nil {
		return err
	}
	rec.Mode = q.cfg.Mode
	rec.Size = msg.Size()
	if rec.Time.IsZero() {
		rec.Time = q.now()
	}
	rec.Expires = rec.Time.Add(q.cfg.Retention.D())
	rec.From, rec.Subject = summary(msg.Open())
	if rec.Mode == ModeStore {
		if rec.Size > int64(q.cfg.MaxMessageSize) {
			return fmt.Errorf("%w: the message has %d bytes, over max_message_size (%d)", ErrFull, rec.Size, int64(q.cfg.MaxMessageSize))
		}
		if q.cfg.MaxSize > 0 {
			_, used, err := st.QuarStats(ctx)
			if err != nil {
				return fmt.Errorf("quarantine: %w", err)
			}
			if used+rec.Size > int64(q.cfg.MaxSize) {
				return fmt.Errorf("%w: %d bytes stored, max_size is %d", ErrFull, used, int64(q.cfg.MaxSize))
			}
		}
	}
	meta, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	body := msg.Open()
	if rec.Mode == ModeHold {
		body = strings.NewReader("")
	}
	m := store.HeldMessage{ID: rec.ID, Time: rec.Time, Expires: rec.Expires, Size: rec.Size, Held: true, Meta: meta}
	if err := st.QuarPut(ctx, m, body); err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	q.log.Info("quarantine: kept", "ref", rec.ID, "mode", rec.Mode, "kind", string(rec.Kind), "size", rec.Size,
		"rcpts", len(rec.Recipients))
	q.updateReport(ctx)
	return nil
}

// summary decodes From: and Subject: of the header block (RFC 2047 encoded words) for lists.
func summary(r io.Reader) (from, subject string) {
	h, _ := textproto.NewReader(bufio.NewReader(io.LimitReader(r, 256<<10))).ReadMIMEHeader()
	dec := new(mime.WordDecoder)
	decode := func(v string) string {
		if d, err := dec.DecodeHeader(v); err == nil {
			return d
		}
		return v
	}
	return decode(h.Get("From")), decode(h.Get("Subject"))
}

// updateReport tells the report function (the metrics gauges) the quarantine's size.
func (q *Quarantine) updateReport(ctx context.Context) {
	st, err := q.st()
	if err != nil {
		return
	}
	if held, size, err := st.QuarStats(ctx); err == nil {
		q.report(held, size)
	}
}

func decode(m store.HeldMessage) (Record, error) {
	var rec Record
	if err := json.Unmarshal(m.Meta, &rec); err != nil {
		return rec, fmt.Errorf("quarantine: record %s: %w", m.ID, err)
	}
	return rec, nil
}

// Get returns the record of id, or ErrNotFound.
func (q *Quarantine) Get(ctx context.Context, id string) (Record, error) {
	st, err := q.st()
	if err != nil {
		return Record{}, err
	}
	m, err := st.QuarGet(ctx, id)
	if err != nil {
		return Record{}, errStore(err)
	}
	return decode(m)
}

// Open returns the message exactly as received, byte for byte (moat's added headers are in Record.AddedHeaders).
func (q *Quarantine) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	rec, err := q.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.Mode == ModeHold {
		return nil, fmt.Errorf("quarantine: %s is in the MTA's hold queue (queue id %s): moat has no copy", id, rec.QueueID)
	}
	st, err := q.st()
	if err != nil {
		return nil, err
	}
	rc, err := st.QuarBody(ctx, id)
	return rc, errStore(err)
}
