package web

import (
	"crypto/tls"
	"net"
	"net/mail"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/moatmail/moat/config"
)

// Table is the name of the top-level table this package reads.
const Table = "web"

// DefaultListen is where the review page listens when [web] does not say.
const DefaultListen = "127.0.0.1:9358"

// Config is the [web] table. Without the table, nothing is served.
type Config struct {
	// Listen is the address of the review page; a non-loopback address needs TLS.
	Listen string `toml:"listen"`
	// TLSCert and TLSKey (PEM files) serve HTTPS; the session cookie is then marked Secure.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// Passwords is the administrators' file, one "user:bcrypt-hash" per line (moat passwd writes it).
	Passwords string `toml:"passwords"`
	// SessionTTL is how long a login lasts.
	SessionTTL config.Duration `toml:"session_ttl"`
	// LoginAttempts failed logins per client address, and per user name, are allowed in LoginWindow.
	LoginAttempts int             `toml:"login_attempts"`
	LoginWindow   config.Duration `toml:"login_window"`
	// PageSize is the number of messages on one page of the list.
	PageSize int `toml:"page_size"`

	Digest DigestConfig `toml:"digest"`

	enabled bool
	cert    *tls.Certificate
	secret  []byte
}

// DigestConfig is the [web.digest] table: the recipients' daily mail with a signed link. Digests are off
// unless the table is present.
type DigestConfig struct {
	// SecretFile holds the key of the links' HMAC (at least 32 bytes; keep it private).
	SecretFile string `toml:"secret_file"`
	// BaseURL is the address of the review page as recipients reach it, e.g. "https://mx1.example.org:9358".
	BaseURL string `toml:"base_url"`
	// From is the digest's From: and envelope sender.
	From string `toml:"from"`
	// SMTP is where digests are handed over (host:port), e.g. the MTA's release listener.
	SMTP string `toml:"smtp"`
	// Interval between two digests; SendAt ("HH:MM", local time) fixes the time of day of the first.
	Interval config.Duration `toml:"interval"`
	SendAt   string          `toml:"send_at"`
	// LinkValidity is how long a digest's link opens a session.
	LinkValidity config.Duration `toml:"link_validity"`

	enabled bool
}

// Enabled reports whether the review page is configured.
func (c Config) Enabled() bool { return c.enabled }

// DigestsEnabled reports whether digests are configured.
func (c Config) DigestsEnabled() bool { return c.Digest.enabled }

// TLS reports whether the page is served over HTTPS.
func (c Config) TLS() bool { return c.cert != nil }

// defaults are the values of the keys [web] does not set.
func defaults() Config {
	return Config{
		Listen:        DefaultListen,
		SessionTTL:    config.Duration(8 * time.Hour),
		LoginAttempts: 5,
		LoginWindow:   config.Duration(15 * time.Minute),
		PageSize:      50,
		Digest: DigestConfig{
			Interval:     config.Duration(24 * time.Hour),
			LinkValidity: config.Duration(7 * 24 * time.Hour),
		},
	}
}

// LoadConfig decodes and validates the [web] table of f; errors name the file, line and key.
func LoadConfig(f *config.File) (Config, error) {
	c := defaults()
	sec := f.Section(Table)
	if !sec.Present() {
		return c, nil
	}
	c.enabled = true
	if err := sec.Decode(&c); err != nil {
		return c, err
	}
	if err := c.checkListen(f, sec); err != nil {
		return c, err
	}
	if c.Passwords == "" {
		return c, sec.Errorf("passwords", "give the administrators' password file (written by moat passwd)")
	}
	c.Passwords = f.Abs(c.Passwords)
	if _, err := ReadPasswords(c.Passwords); err != nil {
		return c, sec.Errorf("passwords", "%v", err)
	}
	switch {
	case c.SessionTTL.D() < time.Minute:
		return c, sec.Errorf("session_ttl", "must be at least 1m")
	case c.LoginAttempts < 1:
		return c, sec.Errorf("login_attempts", "must be at least 1")
	case c.LoginWindow.D() <= 0:
		return c, sec.Errorf("login_window", "must be positive")
	case c.PageSize < 1 || c.PageSize > 1000:
		return c, sec.Errorf("page_size", "must be 1 to 1000")
	}
	if sub := sec.Sub("digest"); sub.Present() {
		if err := c.checkDigest(f, sub); err != nil {
			return c, err
		}
	}
	return c, nil
}

func (c *Config) checkListen(f *config.File, sec *config.Section) error {
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return sec.Errorf("listen", "want host:port such as %q: %v", DefaultListen, err)
	}
	if host == "" {
		return sec.Errorf("listen", "give an address to bind (e.g. 127.0.0.1), not all interfaces by accident")
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return sec.Errorf("listen", "bad port %q", port)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return sec.Errorf("tls_key", "tls_cert and tls_key go together")
	}
	if c.TLSCert != "" {
		c.TLSCert, c.TLSKey = f.Abs(c.TLSCert), f.Abs(c.TLSKey)
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return sec.Errorf("tls_cert", "%v", err)
		}
		c.cert = &cert
		return nil
	}
	// Passwords and session cookies must not cross a network in clear text.
	if ip := net.ParseIP(host); (ip == nil && host != "localhost") || (ip != nil && !ip.IsLoopback()) {
		return sec.Errorf("listen", "%s is not a loopback address: set tls_cert and tls_key (or put a TLS proxy in front on 127.0.0.1)", host)
	}
	return nil
}

func (c *Config) checkDigest(f *config.File, sec *config.Section) error {
	d := &c.Digest
	d.enabled = true
	if d.SecretFile == "" {
		return sec.Errorf("secret_file", "give the file with the links' HMAC key (e.g. head -c 32 /dev/urandom > FILE)")
	}
	d.SecretFile = f.Abs(d.SecretFile)
	secret, err := os.ReadFile(d.SecretFile)
	if err != nil {
		return sec.Errorf("secret_file", "%v", err)
	}
	if len(secret) < 32 {
		return sec.Errorf("secret_file", "%s holds %d bytes; the key needs at least 32", d.SecretFile, len(secret))
	}
	c.secret = secret
	u, err := url.Parse(d.BaseURL)
	if d.BaseURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return sec.Errorf("base_url", "want the page's address as recipients reach it, e.g. \"https://mx.example.org:9358\"")
	}
	d.BaseURL = strings.TrimSuffix(d.BaseURL, "/")
	if a, err := mail.ParseAddress(d.From); d.From == "" || err != nil || a.Name != "" {
		return sec.Errorf("from", "want a bare address such as \"postmaster@example.org\"")
	}
	if _, _, err := net.SplitHostPort(d.SMTP); err != nil {
		return sec.Errorf("smtp", "want host:port of the MTA listener that delivers the digests, e.g. \"127.0.0.1:10025\"")
	}
	if d.Interval.D() < time.Minute {
		return sec.Errorf("interval", "must be at least 1m")
	}
	if d.SendAt != "" {
		if _, err := time.Parse("15:04", d.SendAt); err != nil {
			return sec.Errorf("send_at", "want a time of day such as \"07:30\"")
		}
	}
	if d.LinkValidity.D() < time.Hour {
		return sec.Errorf("link_validity", "must be at least 1h")
	}
	return nil
}

// firstDigest is when the first digest goes after start, at now.
func (d DigestConfig) firstDigest(now time.Time) time.Time {
	if d.SendAt == "" {
		return now.Add(d.Interval.D())
	}
	at, _ := time.Parse("15:04", d.SendAt)
	next := time.Date(now.Year(), now.Month(), now.Day(), at.Hour(), at.Minute(), 0, 0, now.Location())
	if !next.After(now) {
		next = next.AddDate(0, 0, 1)
	}
	return next
}
