package web

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// pages holds the parsed templates: each page is layout.html with the page's own file.
type pages struct{ m map[string]*template.Template }

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format("2006-01-02 15:04")
	},
	"size":  humanSize,
	"score": func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"join":  strings.Join,
	"query": func(v url.Values) template.URL { return template.URL("?" + v.Encode()) },
}

func loadPages() (*pages, error) {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pg := &pages{m: map[string]*template.Template{}}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", base, err)
		}
		pg.m[strings.TrimSuffix(base, ".html")] = t
	}
	return pg, nil
}

// view is what every page gets: the logged-in user (nil on the login page), the form token and the page's
// own data.
type view struct {
	Title string
	User  string
	Admin bool
	Rcpt  string // a digest session's recipient
	CSRF  string
	Data  any
}

// render writes page name with status code; a template error is logged and answered with a plain 500.
func (s *Server) render(w http.ResponseWriter, code int, name string, sess *session, title string, data any) {
	v := view{Title: title, Data: data}
	if sess != nil {
		v.User, v.Admin, v.Rcpt, v.CSRF = sess.user, sess.admin, sess.rcpt, sess.csrf
	}
	if c, ok := data.(interface{ loginCSRF() string }); ok {
		v.CSRF = c.loginCSRF()
	}
	var buf bytes.Buffer
	if err := s.pages.m[name].Execute(&buf, v); err != nil {
		s.log.Error("web: rendering a page failed", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// notice is the data of the one-message pages: an outcome, an error, a refusal.
type notice struct {
	Heading string
	Lines   []string
	Back    string // where the page's link leads
}

func (s *Server) notice(w http.ResponseWriter, code int, sess *session, heading string, lines ...string) {
	s.render(w, code, "notice", sess, heading, notice{Heading: heading, Lines: lines, Back: "/"})
}

func humanSize(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%d MB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 10<<10:
		return fmt.Sprintf("%d KB", n>>10)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
