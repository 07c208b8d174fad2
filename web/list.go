package web

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/moatmail/moat/quarantine"
)

// listData is the held list: the filter as given, one page of records and the links around it.
type listData struct {
	Filter    url.Values
	Q         quarantine.Query
	Records   []row
	Total     int
	From, To  int    // 1-based positions of the page's first and last record
	Prev      string // query of the previous page; "" on the first
	Next      string
	Sorts     []sortLink
	Kinds     []quarantine.Kind
	Actions   []actionChoice
	FormError string
}

// row is one record of the list, with only what the session may see of its recipients.
type row struct {
	quarantine.Record
	Rcpts []string
}

type sortLink struct {
	Label, Query string
	Active, Desc bool
}

var sortKeys = []struct{ key, label string }{
	{"time", "Received"}, {"sender", "Sender"}, {"subject", "Subject"}, {"score", "Score"}, {"size", "Size"},
}

const dateLayout = "2006-01-02"

// parseQuery turns the list's form into a quarantine query for sess; a bad field is reported, not fatal.
func (s *Server) parseQuery(v url.Values, sess *session) (quarantine.Query, string) {
	q := quarantine.Query{
		Text: strings.TrimSpace(v.Get("q")), Sender: strings.TrimSpace(v.Get("sender")),
		Rcpt: strings.TrimSpace(v.Get("rcpt")), Kind: quarantine.Kind(v.Get("kind")),
		Sort: v.Get("sort"), Desc: v.Get("desc") == "1", Limit: s.cfg.PageSize,
	}
	if sess.rcpt != "" {
		q.RcptExact = sess.rcpt
	}
	var problems []string
	switch q.Kind {
	case "", quarantine.KindSpam, quarantine.KindVirus, quarantine.KindPolicy:
	default:
		problems, q.Kind = append(problems, "unknown kind "+strconv.Quote(string(q.Kind))), ""
	}
	valid := q.Sort == ""
	for _, k := range sortKeys {
		valid = valid || q.Sort == k.key
	}
	if !valid {
		problems, q.Sort = append(problems, "unknown sort "+strconv.Quote(q.Sort)), ""
	}
	for _, d := range []struct {
		name string
		t    *time.Time
		add  int
	}{{"since", &q.Since, 0}, {"until", &q.Until, 1}} {
		if raw := v.Get(d.name); raw != "" {
			t, err := time.ParseInLocation(dateLayout, raw, time.Local)
			if err != nil {
				problems = append(problems, d.name+": want a date such as 2026-12-31")
				continue
			}
			*d.t = t.AddDate(0, 0, d.add) // until is inclusive: the end of that day
		}
	}
	if page, err := strconv.Atoi(v.Get("page")); err == nil && page > 1 {
		q.Offset = (page - 1) * q.Limit
	}
	return q, strings.Join(problems, "; ")
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, sess *session) {
	v := r.URL.Query()
	q, problem := s.parseQuery(v, sess)
	recs, total, err := s.q.List(r.Context(), q)
	if err != nil {
		s.log.Error("web: listing the quarantine failed", "err", err)
		s.notice(w, http.StatusBadGateway, sess, "The quarantine cannot be read", err.Error())
		return
	}
	d := listData{Filter: v, Q: q, Total: total, FormError: problem, Actions: bulkChoices(sess),
		Kinds: []quarantine.Kind{quarantine.KindSpam, quarantine.KindVirus, quarantine.KindPolicy}}
	for _, rec := range recs {
		d.Records = append(d.Records, row{Record: rec, Rcpts: visibleRcpts(rec, sess)})
	}
	if len(recs) > 0 {
		d.From, d.To = q.Offset+1, q.Offset+len(recs)
	}
	page := q.Offset/q.Limit + 1
	if page > 1 {
		d.Prev = withParam(v, "page", strconv.Itoa(page-1))
	}
	if q.Offset+len(recs) < total {
		d.Next = withParam(v, "page", strconv.Itoa(page+1))
	}
	for _, k := range sortKeys {
		active := q.Sort == k.key || (q.Sort == "" && k.key == "time")
		desc := "0"
		if !active || !q.Desc {
			desc = "1" // a new column sorts descending first; the active one toggles
		}
		d.Sorts = append(d.Sorts, sortLink{Label: k.label, Query: withParam(v, "sort", k.key, "desc", desc), Active: active, Desc: q.Desc})
	}
	s.render(w, http.StatusOK, "list", sess, "Held mail", d)
}

// withParam returns the query v with each key of kv set to the value after it; any change but the page's
// goes back to the first page.
func withParam(v url.Values, kv ...string) string {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	out.Del("page")
	for i := 0; i+1 < len(kv); i += 2 {
		out.Set(kv[i], kv[i+1])
	}
	return "?" + out.Encode()
}

// visibleRcpts lists the recipients a session may see: all for an administrator, its own for a recipient.
func visibleRcpts(rec quarantine.Record, sess *session) []string {
	var out []string
	for _, rc := range rec.Recipients {
		if sess.rcpt == "" || strings.EqualFold(rc.Addr, sess.rcpt) {
			out = append(out, rc.Addr+" ("+string(rc.State)+")")
		}
	}
	return out
}

// bulk applies one action to every selected message and shows what became of each.
func (s *Server) bulk(w http.ResponseWriter, r *http.Request, sess *session) {
	action := r.PostFormValue("action")
	ids := r.PostForm["id"]
	if _, ok := actions[action]; !ok {
		s.notice(w, http.StatusBadRequest, sess, "Nothing done", "Choose an action.")
		return
	}
	if len(ids) == 0 {
		s.notice(w, http.StatusBadRequest, sess, "Nothing done", "Select at least one message.")
		return
	}
	var lines []string
	failed := false
	for _, id := range ids {
		out, err := s.do(r, sess, id, action)
		if err != nil {
			failed = true
			lines = append(lines, id+": "+actionError(err))
			continue
		}
		lines = append(lines, id+": "+out)
	}
	code := http.StatusOK
	if failed {
		code = http.StatusMultiStatus
	}
	s.notice(w, code, sess, actions[action].label+": "+strconv.Itoa(len(ids))+" messages", lines...)
}

func actionError(err error) string {
	switch {
	case errors.Is(err, quarantine.ErrNotFound), errors.Is(err, errNotYours):
		return "no such message (already purged, or not yours)"
	case errors.Is(err, quarantine.ErrForbidden):
		return "not allowed: " + err.Error()
	}
	return "failed: " + err.Error()
}
