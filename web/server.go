package web

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/moatmail/moat/quarantine"
)

// Quarantine is what the review page asks of the quarantine; *quarantine.Quarantine implements it.
type Quarantine interface {
	List(ctx context.Context, qu quarantine.Query) ([]quarantine.Record, int, error)
	Get(ctx context.Context, id string) (quarantine.Record, error)
	Open(ctx context.Context, id string) (io.ReadCloser, error)
	Release(ctx context.Context, id string, rcpts []string, by quarantine.Actor) ([]quarantine.Recipient, error)
	Delete(ctx context.Context, id string, rcpts []string, by quarantine.Actor) error
	MarkSpam(ctx context.Context, id string, by quarantine.Actor) error
	MarkHam(ctx context.Context, id string, rcpts []string, whitelist bool, by quarantine.Actor) ([]quarantine.Recipient, error)
	HeldRecipients(ctx context.Context, since time.Time) ([]string, error)
}

//go:embed templates/*.html static/*
var assets embed.FS

// cookieName is the session cookie; loginCookie carries the login form's CSRF token before there is a session.
const (
	cookieName  = "moat_session"
	loginCookie = "moat_login"
)

// maxMessageRead bounds how much of a held message the page reads to show it.
const maxMessageRead = 64 << 20

// Server is the review page.
type Server struct {
	cfg      Config
	q        Quarantine
	log      *slog.Logger
	now      func() time.Time
	sessions *sessions
	byAddr   *limiter // failed logins per client address
	byUser   *limiter // failed logins per user name
	pages    *pages
	handler  http.Handler

	http *http.Server
	ln   net.Listener
}

// New builds the review page of cfg over q.
func New(cfg Config, q Quarantine, log *slog.Logger) (*Server, error) {
	pg, err := loadPages()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, q: q, log: log, now: time.Now, pages: pg}
	s.sessions = newSessions(func() time.Time { return s.now() })
	s.byAddr = newLimiter(cfg.LoginAttempts, cfg.LoginWindow.D(), func() time.Time { return s.now() })
	s.byUser = newLimiter(cfg.LoginAttempts, cfg.LoginWindow.D(), func() time.Time { return s.now() })
	s.handler = securityHeaders(s.routes())
	return s, nil
}

// ServeHTTP serves the review page.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.FileServerFS(assets))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.withSession(s.logout))
	mux.HandleFunc("GET /d", s.digestLink)
	mux.HandleFunc("GET /{$}", s.withSession(s.list))
	mux.HandleFunc("POST /bulk", s.withSession(s.bulk))
	mux.HandleFunc("GET /msg/{id}", s.withSession(s.message))
	mux.HandleFunc("GET /msg/{id}/part/{n}", s.withSession(s.htmlPart))
	mux.HandleFunc("GET /msg/{id}/confirm", s.withSession(s.confirm))
	mux.HandleFunc("POST /msg/{id}/act", s.withSession(s.act))
	return mux
}

// pageCSP is the policy of every page but the HTML parts: nothing but the page's own style sheet and frames,
// no script at all, no framing by others.
const pageCSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; form-action 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'"

// partCSP is the policy of a message's HTML part: no script, no remote anything (images only inline data),
// sandboxed even when opened outside its frame, framed only by the message page.
const partCSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'; " +
	"frame-ancestors 'self'; base-uri 'none'; sandbox"

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// Listen binds the configured address; Serve then serves on it.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("web: listen %s: %w", s.cfg.Listen, err)
	}
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      5 * time.Minute, // a release of a large message to a slow MTA
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.cert != nil {
		s.http.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*s.cfg.cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, s.http.TLSConfig)
	}
	s.ln = ln
	return nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Close.
func (s *Server) Serve() error {
	if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("web: %w", err)
	}
	return nil
}

// Close stops the server.
func (s *Server) Close() error {
	if s.http == nil {
		return nil
	}
	return s.http.Close()
}
