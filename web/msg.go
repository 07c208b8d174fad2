package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/moatmail/moat/quarantine"
)

// actionSpec is one thing a reviewer can do to a held message.
type actionSpec struct {
	label   string // the button
	confirm string // the question of the confirmation page
}

var actions = map[string]actionSpec{
	"release":           {"Release", "Deliver this message?"},
	"release-whitelist": {"Release and whitelist sender", "Deliver this message and trust its sender (when SPF or DKIM proves it) from now on?"},
	"ham":               {"Not spam", "Deliver this message and teach the spam filter it is not spam?"},
	"spam":              {"Spam", "Teach the spam filter this is spam and delete it?"},
	"delete":            {"Delete", "Delete this message without delivering it?"},
}

// actionOrder is the order of the buttons.
var actionOrder = []string{"release", "release-whitelist", "ham", "spam", "delete"}

type actionChoice struct{ Name, Label string }

func bulkChoices(*session) []actionChoice {
	out := make([]actionChoice, 0, len(actionOrder))
	for _, a := range actionOrder {
		out = append(out, actionChoice{a, actions[a].label})
	}
	return out
}

// errNotYours hides from a recipient's session that a message of someone else exists.
var errNotYours = errors.New("not addressed to this recipient")

func actor(sess *session) quarantine.Actor {
	return quarantine.Actor{Name: sess.user, Admin: sess.admin, Recipient: sess.rcpt}
}

// record fetches id for sess: a recipient's session sees only mail addressed to it.
func (s *Server) record(ctx context.Context, sess *session, id string) (quarantine.Record, error) {
	rec, err := s.q.Get(ctx, id)
	if err != nil || sess.rcpt == "" {
		return rec, err
	}
	for _, rc := range rec.Recipients {
		if strings.EqualFold(rc.Addr, sess.rcpt) {
			return rec, nil
		}
	}
	return quarantine.Record{}, fmt.Errorf("%s: %w", id, errNotYours)
}

// do carries out action on id for sess and describes the outcome in a line.
func (s *Server) do(r *http.Request, sess *session, id, action string) (string, error) {
	ctx := r.Context()
	if _, err := s.record(ctx, sess, id); err != nil {
		return "", err
	}
	var rcpts []string // nil: every held recipient
	if sess.rcpt != "" {
		rcpts = []string{sess.rcpt}
	}
	by := actor(sess)
	var done []quarantine.Recipient
	var err error
	switch action {
	case "release":
		done, err = s.q.Release(ctx, id, rcpts, by)
	case "release-whitelist", "ham":
		done, err = s.q.MarkHam(ctx, id, rcpts, action == "release-whitelist", by)
	case "spam":
		err = s.q.MarkSpam(ctx, id, by)
	case "delete":
		err = s.q.Delete(ctx, id, rcpts, by)
	default:
		return "", fmt.Errorf("unknown action %q", action)
	}
	s.log.Info("web: review action", "ref", id, "action", action, "by", by.Name, "admin", by.Admin, "client", clientAddr(r), "err", err)
	if err != nil {
		return "", err
	}
	return describe(action, done), nil
}

func describe(action string, done []quarantine.Recipient) string {
	switch action {
	case "spam":
		return "learned as spam and deleted"
	case "delete":
		return "deleted"
	}
	if len(done) == 0 {
		return "nothing was held for delivery"
	}
	var parts []string
	for _, rc := range done {
		p := rc.Addr + " " + string(rc.State)
		if rc.Reply != "" {
			p += " (" + rc.Reply + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

// messageData is the message page.
type messageData struct {
	Rec     quarantine.Record
	Rcpts   []quarantine.Recipient
	Msg     *parsed
	Parts   []string // URLs of the sanitised HTML parts
	Actions []actionChoice
	Error   string // the message's bytes could not be read
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request, sess *session) (quarantine.Record, bool) {
	id := r.PathValue("id")
	rec, err := s.record(r.Context(), sess, id)
	switch {
	case errors.Is(err, quarantine.ErrNotFound), errors.Is(err, errNotYours):
		s.notice(w, http.StatusNotFound, sess, "No such message", "The quarantine holds no message "+strconv.Quote(id)+" for you (released, deleted or expired).")
		return rec, false
	case err != nil:
		s.log.Error("web: reading a quarantine record failed", "ref", id, "err", err)
		s.notice(w, http.StatusBadGateway, sess, "The quarantine cannot be read", err.Error())
		return rec, false
	}
	return rec, true
}

// open parses the held message of id; a failure to read it is returned as a line for the page.
func (s *Server) open(ctx context.Context, id string) (*parsed, string) {
	rc, err := s.q.Open(ctx, id)
	if err != nil {
		s.log.Error("web: opening a held message failed", "ref", id, "err", err)
		return &parsed{}, "the message itself cannot be read: " + err.Error()
	}
	defer rc.Close()
	return parseMessage(io.LimitReader(rc, maxMessageRead)), ""
}

func (s *Server) message(w http.ResponseWriter, r *http.Request, sess *session) {
	rec, ok := s.lookup(w, r, sess)
	if !ok {
		return
	}
	d := messageData{Rec: rec, Actions: bulkChoices(sess)}
	for _, rc := range rec.Recipients {
		if sess.rcpt == "" || strings.EqualFold(rc.Addr, sess.rcpt) {
			d.Rcpts = append(d.Rcpts, rc)
		}
	}
	d.Msg, d.Error = s.open(r.Context(), rec.ID)
	for i := range d.Msg.HTML {
		d.Parts = append(d.Parts, fmt.Sprintf("/msg/%s/part/%d", url.PathEscape(rec.ID), i))
	}
	s.render(w, http.StatusOK, "message", sess, rec.Subject, d)
}

// htmlPart serves one sanitised HTML part, for the message page's sandboxed frame.
func (s *Server) htmlPart(w http.ResponseWriter, r *http.Request, sess *session) {
	rec, ok := s.lookup(w, r, sess)
	if !ok {
		return
	}
	n, err := strconv.Atoi(r.PathValue("n"))
	msg, _ := s.open(r.Context(), rec.ID)
	if err != nil || n < 0 || n >= len(msg.HTML) {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Security-Policy", partCSP)
	w.Header().Set("X-Frame-Options", "SAMEORIGIN")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, "<!doctype html><meta charset=\"utf-8\"><body>%s</body>", msg.HTML[n])
}

type confirmData struct {
	Rec      quarantine.Record
	Action   string
	Label    string
	Question string
}

// confirm asks before an action: a digest's links lead here, and only the POST of its form acts.
func (s *Server) confirm(w http.ResponseWriter, r *http.Request, sess *session) {
	rec, ok := s.lookup(w, r, sess)
	if !ok {
		return
	}
	a := r.URL.Query().Get("action")
	spec, ok := actions[a]
	if !ok {
		s.notice(w, http.StatusBadRequest, sess, "Unknown action", "There is no action "+strconv.Quote(a)+".")
		return
	}
	s.render(w, http.StatusOK, "confirm", sess, spec.label, confirmData{Rec: rec, Action: a, Label: spec.label, Question: spec.confirm})
}

func (s *Server) act(w http.ResponseWriter, r *http.Request, sess *session) {
	id, action := r.PathValue("id"), r.PostFormValue("action")
	spec, ok := actions[action]
	if !ok {
		s.notice(w, http.StatusBadRequest, sess, "Unknown action", "There is no action "+strconv.Quote(action)+".")
		return
	}
	out, err := s.do(r, sess, id, action)
	switch {
	case errors.Is(err, quarantine.ErrNotFound), errors.Is(err, errNotYours):
		s.notice(w, http.StatusNotFound, sess, spec.label+": failed", id+": "+actionError(err))
	case errors.Is(err, quarantine.ErrForbidden):
		s.notice(w, http.StatusForbidden, sess, spec.label+": refused", id+": "+actionError(err))
	case err != nil:
		s.notice(w, http.StatusBadGateway, sess, spec.label+": failed", id+": "+actionError(err))
	default:
		s.notice(w, http.StatusOK, sess, spec.label+": done", id+": "+out)
	}
}
