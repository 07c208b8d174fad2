package metrics

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moatmail/moat/config"
)

// Table is the name of the top-level table this package reads.
const Table = "metrics"

// Config is the [metrics] table. Without Listen, nothing is served and nothing is recorded.
type Config struct {
	// Listen is the address of the HTTP endpoint, "127.0.0.1:9357"; "" turns metrics off.
	Listen string `toml:"listen"`
	// BearerToken, or BasicUser and BasicPassword, protect both endpoints; empty: no authentication.
	BearerToken   string `toml:"bearer_token"`
	BasicUser     string `toml:"basic_user"`
	BasicPassword string `toml:"basic_password"`
	// TLSCert and TLSKey (PEM files) serve HTTPS instead of HTTP.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`

	cert *tls.Certificate
}

// LoadConfig decodes and validates the [metrics] table of f; errors name the file, line and key.
func LoadConfig(f *config.File) (Config, error) {
	var c Config
	sec := f.Section(Table)
	if err := sec.Decode(&c); err != nil {
		return c, err
	}
	if c.Listen == "" {
		for _, k := range sec.Keys() {
			if k != "listen" {
				return c, sec.Errorf(k, "has no effect without listen")
			}
		}
		return c, nil
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return c, sec.Errorf("listen", "want host:port such as \"127.0.0.1:9357\": %v", err)
	}
	if host == "" {
		return c, sec.Errorf("listen", "give an address to bind (e.g. 127.0.0.1), not all interfaces by accident")
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return c, sec.Errorf("listen", "bad port %q", port)
	}
	if c.BearerToken != "" && (c.BasicUser != "" || c.BasicPassword != "") {
		return c, sec.Errorf("bearer_token", "choose bearer_token or basic_user/basic_password, not both")
	}
	if (c.BasicUser == "") != (c.BasicPassword == "") {
		return c, sec.Errorf("basic_password", "basic_user and basic_password go together")
	}
	if strings.Contains(c.BasicUser, ":") {
		return c, sec.Errorf("basic_user", "must not contain ':'")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, sec.Errorf("tls_key", "tls_cert and tls_key go together")
	}
	if c.TLSCert != "" {
		c.TLSCert, c.TLSKey = f.Abs(c.TLSCert), f.Abs(c.TLSKey)
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return c, sec.Errorf("tls_cert", "%v", err)
		}
		c.cert = &cert
	}
	return c, nil
}

// Health reports what keeps moat from serving mail; nil when it is healthy.
type Health func(ctx context.Context) error

// Server serves /metrics and /healthz.
type Server struct {
	http *http.Server
	ln   net.Listener
	log  *slog.Logger
}

// healthTimeout bounds one health probe: a monitoring system asks often and must not pile up requests on a
// hung store.
const healthTimeout = 5 * time.Second

// Handler returns the HTTP handler of both endpoints, with the configured authentication.
func Handler(cfg Config, reg *prometheus.Registry, health Health, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogAdapter{log}, Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := health(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return authenticate(cfg, mux)
}

func authenticate(cfg Config, next http.Handler) http.Handler {
	switch {
	case cfg.BearerToken != "":
		want := []byte("Bearer " + cfg.BearerToken)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="moat"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	case cfg.BasicUser != "":
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			// Both compared whatever the first says, so that the time taken tells nothing.
			uok := subtle.ConstantTimeCompare([]byte(u), []byte(cfg.BasicUser))
			pok := subtle.ConstantTimeCompare([]byte(p), []byte(cfg.BasicPassword))
			if !ok || uok&pok != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="moat"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	return next
}

// Listen binds the configured address; Serve then serves on it. Binding first lets serve refuse to start
// when the port is taken, before it tells systemd it is ready.
func Listen(cfg Config, handler http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cfg.cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	return &Server{http: srv, ln: ln, log: log}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Close.
func (s *Server) Serve() error {
	if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// Close stops the server.
func (s *Server) Close() error { return s.http.Close() }

// slogAdapter lets promhttp report encoding errors to moat's log.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Println(v ...any) { a.log.Error("metrics: " + fmt.Sprint(v...)) }
