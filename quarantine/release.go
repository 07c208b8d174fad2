package quarantine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
)

// Release re-injects the message to release_via for rcpts (nil: every held recipient; an Actor with Recipient
// set: only that one) and marks each released only after the MTA answered 250 for it. It returns the
// recipients acted on with their new state; a refused one stays held, with the MTA's answer in Reply.
func (q *Quarantine) Release(ctx context.Context, id string, rcpts []string, by Actor) ([]Recipient, error) {
	rec, err := q.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.Kind == KindVirus && !by.Admin {
		return nil, fmt.Errorf("%w: virus mail is released by administrators only", ErrForbidden)
	}
	if rec.Mode == ModeHold {
		return nil, fmt.Errorf("quarantine: %s is in the MTA's hold queue (queue id %s): release it there", id, rec.QueueID)
	}
	chosen, err := choose(rec, rcpts, by)
	if err != nil {
		return nil, err
	}
	now := q.now()
	replies, sendErr := q.send(ctx, rec, chosen, by, now)
	changes := map[string]Recipient{}
	var out []Recipient
	for _, a := range chosen {
		r := Recipient{Addr: a, State: StateHeld, Reply: replies[strings.ToLower(a)]}
		if sendErr == nil && strings.HasPrefix(r.Reply, "250") {
			r.State, r.Changed, r.By = StateReleased, now, by.Name
		} else if sendErr != nil && r.Reply == "" {
			r.Reply = sendErr.Error()
		}
		changes[strings.ToLower(a)] = r
		out = append(out, r)
	}
	if _, err := q.setStates(ctx, id, by, changes); err != nil {
		return out, err
	}
	for _, r := range out {
		q.log.Info("quarantine: release", "ref", id, "by", by.Name, "rcpt", r.Addr, "state", string(r.State), "reply", r.Reply)
	}
	return out, sendErr
}

// send delivers the stored message to release_via for rcpts and returns the MTA's answer for each (lower-case
// address → "250 …" once the message was accepted for it, else the refusal). The error is for a release that
// reached no recipient.
func (q *Quarantine) send(ctx context.Context, rec Record, rcpts []string, by Actor, now time.Time) (map[string]string, error) {
	replies := map[string]string{}
	ctx, cancel := context.WithTimeout(ctx, q.cfg.ReleaseTimeout.D())
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", q.cfg.ReleaseVia)
	if err != nil {
		return replies, fmt.Errorf("quarantine: release via %s: %w", q.cfg.ReleaseVia, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	host, _, _ := net.SplitHostPort(q.cfg.ReleaseVia)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return replies, fmt.Errorf("quarantine: release via %s: %w", q.cfg.ReleaseVia, err)
	}
	defer c.Close()
	if err := c.Hello(q.cfg.ReleaseHelo); err != nil {
		return replies, fmt.Errorf("quarantine: release via %s: EHLO: %w", q.cfg.ReleaseVia, err)
	}
	if err := c.Mail(rec.Sender); err != nil {
		return replies, fmt.Errorf("quarantine: release via %s: MAIL FROM:<%s>: %w", q.cfg.ReleaseVia, rec.Sender, err)
	}
	var accepted []string
	for _, a := range rcpts {
		if err := c.Rcpt(a); err != nil {
			replies[strings.ToLower(a)] = smtpReply(err)
			continue
		}
		accepted = append(accepted, a)
	}
	if len(accepted) == 0 {
		c.Reset()
		c.Quit()
		return replies, errors.New("quarantine: release: the MTA refused every recipient")
	}
	w, err := c.Data()
	if err != nil {
		return replies, fmt.Errorf("quarantine: release via %s: DATA: %w", q.cfg.ReleaseVia, err)
	}
	if err := q.writeReleased(ctx, w, rec, by, now); err != nil {
		return replies, err
	}
	if err := w.Close(); err != nil {
		return replies, fmt.Errorf("quarantine: release via %s: end of data: %s", q.cfg.ReleaseVia, smtpReply(err))
	}
	for _, a := range accepted {
		replies[strings.ToLower(a)] = "250 accepted by " + q.cfg.ReleaseVia
	}
	c.Quit()
	return replies, nil
}

// writeReleased writes the released message: the release field, moat's verdict headers, then the stored
// bytes as received.
func (q *Quarantine) writeReleased(ctx context.Context, w io.Writer, rec Record, by Actor, now time.Time) error {
	var head strings.Builder
	who := by.Name
	if who == "" {
		who = "unknown"
	}
	fmt.Fprintf(&head, "X-Moat-Released: by %s at %s ref %s\r\n", who, now.UTC().Format(time.RFC3339), rec.ID)
	for _, h := range rec.AddedHeaders {
		v := strings.ReplaceAll(strings.ReplaceAll(h.Value, "\r\n", "\n"), "\n", "\r\n")
		if !strings.HasPrefix(v, " ") && !strings.HasPrefix(v, "\t") {
			v = " " + v
		}
		head.WriteString(h.Name + ":" + v + "\r\n")
	}
	if _, err := io.WriteString(w, head.String()); err != nil {
		return fmt.Errorf("quarantine: release: %w", err)
	}
	body, err := q.Open(ctx, rec.ID)
	if err != nil {
		return err
	}
	defer body.Close()
	if _, err := io.Copy(w, body); err != nil {
		return fmt.Errorf("quarantine: release: %w", err)
	}
	return nil
}

// smtpReply is an SMTP error as the MTA's reply line.
func smtpReply(err error) string {
	var te *textproto.Error
	if errors.As(err, &te) {
		return fmt.Sprintf("%d %s", te.Code, te.Msg)
	}
	return err.Error()
}
