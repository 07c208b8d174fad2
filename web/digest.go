package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/smtp"
	"strings"
	"time"

	"github.com/moatmail/moat/quarantine"
)

// maxDigestItems bounds the messages one digest lists; the link shows them all.
const maxDigestItems = 100

// SendDigests mails each local recipient with mail held since `since` the list of its held mail, with a
// signed link valid for link_validity. Only recipients get digests, never senders: the addresses come from
// the quarantine's local recipients. It returns how many digests went; a failure for one recipient does
// not stop the others.
func (s *Server) SendDigests(ctx context.Context, since time.Time) (int, error) {
	if !s.cfg.DigestsEnabled() {
		return 0, errors.New("web: digests are not configured ([web.digest])")
	}
	rcpts, err := s.q.HeldRecipients(ctx, since)
	if err != nil {
		return 0, fmt.Errorf("web: listing recipients with held mail: %w", err)
	}
	sent := 0
	var errs []error
	for _, rcpt := range rcpts {
		recs, total, err := s.q.List(ctx, quarantine.Query{RcptExact: rcpt, State: quarantine.StateHeld, Limit: maxDigestItems})
		if err == nil && total > 0 {
			err = s.sendDigest(ctx, rcpt, recs, total)
		}
		if err != nil {
			s.log.Error("web: digest failed", "rcpt", rcpt, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", rcpt, err))
			continue
		}
		if total > 0 {
			sent++
			s.log.Info("web: digest sent", "rcpt", rcpt, "held", total)
		}
	}
	return sent, errors.Join(errs...)
}

// digestLinkFor is the digest link of rcpt, optionally to one message and action.
func (s *Server) digestLinkFor(rcpt string, expires time.Time, id, action string) string {
	q := signLink(s.cfg.secret, rcpt, expires)
	if id != "" {
		q.Set("m", id)
	}
	if action != "" {
		q.Set("a", action)
	}
	return s.cfg.Digest.BaseURL + "/d?" + q.Encode()
}

// digestMail builds the digest of rcpt: plain text, one entry per held message.
func (s *Server) digestMail(rcpt string, recs []quarantine.Record, total int) []byte {
	expires := s.now().Add(s.cfg.Digest.LinkValidity.D())
	var b bytes.Buffer
	h := func(name, value string) { fmt.Fprintf(&b, "%s: %s\r\n", name, value) }
	h("From", s.cfg.Digest.From)
	h("To", rcpt)
	h("Subject", mime.QEncoding.Encode("utf-8", fmt.Sprintf("Held mail: %d message(s) for %s", total, rcpt)))
	h("Date", s.now().Format(time.RFC1123Z))
	h("Message-ID", fmt.Sprintf("<digest.%d.%s@moat>", s.now().UnixNano(), randomToken()[:12]))
	h("Auto-Submitted", "auto-generated")
	h("Precedence", "bulk")
	h("MIME-Version", "1.0")
	h("Content-Type", "text/plain; charset=utf-8")
	h("Content-Transfer-Encoding", "8bit")
	b.WriteString("\r\n")
	line := func(format string, args ...any) {
		b.WriteString(strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ") + "\r\n")
	}
	line("%d message(s) addressed to you are held by the mail filter and were not delivered.", total)
	line("")
	line("Review them (the link works until %s and opens only your own mail):", expires.Format("2006-01-02 15:04 MST"))
	line("%s", s.digestLinkFor(rcpt, expires, "", ""))
	line("")
	for _, r := range recs {
		line("- %s  %s", r.Time.Local().Format("2006-01-02 15:04"), truncate(oneLine(r.Subject), 120))
		line("  from %s, %s", truncate(oneLine(orText(r.From, r.Sender)), 120), r.Kind)
		line("  deliver it: %s", s.digestLinkFor(rcpt, expires, r.ID, "release"))
		line("")
	}
	if total > len(recs) {
		line("… and %d more: see the link above.", total-len(recs))
	}
	line("Held mail is deleted when it expires. This mail was sent automatically; do not reply.")
	return b.Bytes()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func orText(a, b string) string {
	if strings.TrimSpace(a) != "" {
		return a
	}
	return b
}

// sendDigest hands one digest to the configured SMTP listener.
func (s *Server) sendDigest(ctx context.Context, rcpt string, recs []quarantine.Record, total int) error {
	msg := s.digestMail(rcpt, recs, total)
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", s.cfg.Digest.SMTP)
	if err != nil {
		return err
	}
	// One deadline for the whole dialog: a hung MTA must not hold the digest timer.
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	host, _, _ := net.SplitHostPort(s.cfg.Digest.SMTP)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Mail(s.cfg.Digest.From); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(rcpt); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of data: %w", err)
	}
	return c.Quit()
}

// RunDigests sends digests on the configured schedule until ctx ends.
func (s *Server) RunDigests(ctx context.Context) {
	d := s.cfg.Digest
	next := d.firstDigest(s.now())
	since := s.now().Add(-d.Interval.D())
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		started := s.now()
		n, err := s.SendDigests(ctx, since)
		s.log.Info("web: digests done", "sent", n, "err", err)
		since, next = started, next.Add(d.Interval.D())
		for !next.After(s.now()) {
			next = next.Add(d.Interval.D())
		}
	}
}
