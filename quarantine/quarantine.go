// Package quarantine keeps the messages a quarantine verdict holds, so that a person can review them, release
// them to their recipients, delete them, and teach spamd from them.
//
// # Modes
//
// In mode "store" (the default once the [quarantine] table exists) moat keeps the message itself, in the state
// store ([store]: SQLite on one host, Redis shared by several MX hosts), and answers the MTA with discard: the
// MTA accepts the message (250) and drops it. The message is committed to the store before that answer; when
// the store cannot take it (an error, the total size cap, max_message_size) the answer is 451 4.3.0 with the
// reference id, never a discard, so that nothing is lost. Mode "hold" leaves the message in the MTA's hold
// queue, as without the table, and keeps only moat's record of it (release it with the MTA's tools).
//
// # What is kept
//
// The message exactly as the MTA passed it (byte for byte), the header fields moat would have added, and a
// [Record]: reference id, time, queue id, client, HELO, envelope sender, every recipient with its own
// [State], the [Kind], reasons, score, each check's result, size and expiry.
//
// # Release
//
// A release sends the stored bytes over SMTP to release_via (an MTA listener without milters), with the
// original envelope sender and the chosen recipients, prefixed by an X-Moat-Released field naming who released
// it and when, and by moat's verdict headers. A recipient is marked released only once the MTA accepted the
// message for it; a refused recipient stays held, with the MTA's answer in Recipient.Reply.
//
// # Configuration
//
//	[quarantine]
//	mode = "store"                      # or "hold"
//	retention = "14d"
//	max_size = "2G"                     # all stored messages together; the oldest go first; 0: no cap
//	max_message_size = "50M"
//	release_via = "127.0.0.1:10026"
//	release_helo = ""                   # default: the host name
//	release_timeout = "5m"
//	purge_interval = "1h"
//	spamd_servers = ["tcp:127.0.0.1:783"] # for learning (TELL); none: learning is refused
//	spamd_user = ""
//	local_domains = []                  # digests; default: [checks.relay] local_domains
package quarantine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/scanners/servers"
	"github.com/moatmail/moat/store"
)

// Table is the top-level configuration table of the quarantine.
const Table = "quarantine"

// The modes of the quarantine.
const (
	ModeStore = "store"
	ModeHold  = "hold"
)

// Config is the [quarantine] table.
type Config struct {
	Mode           string          `toml:"mode"`
	Retention      config.Duration `toml:"retention"`
	MaxSize        config.Size     `toml:"max_size"`
	MaxMessageSize config.Size     `toml:"max_message_size"`
	ReleaseVia     string          `toml:"release_via"`
	ReleaseHelo    string          `toml:"release_helo"`
	ReleaseTimeout config.Duration `toml:"release_timeout"`
	PurgeInterval  config.Duration `toml:"purge_interval"`
	SpamdServers   []string        `toml:"spamd_servers"`
	SpamdUser      string          `toml:"spamd_user"`
	LocalDomains   []string        `toml:"local_domains"`
}

// DefaultConfig returns the defaults of [quarantine].
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return Config{
		Mode:           ModeStore,
		Retention:      config.Duration(14 * 24 * time.Hour),
		MaxSize:        2 << 30,
		MaxMessageSize: 50 << 20,
		ReleaseVia:     "127.0.0.1:10026",
		ReleaseHelo:    host,
		ReleaseTimeout: config.Duration(5 * time.Minute),
		PurgeInterval:  config.Duration(time.Hour),
	}
}

// Decode reads and validates the [quarantine] table of f; errors name the file, line and key. Socket paths of
// spamd_servers are made relative to the configuration file.
func Decode(f *config.File) (Config, error) {
	sec := f.Section(Table)
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return cfg, err
	}
	if cfg.Mode != ModeStore && cfg.Mode != ModeHold {
		return cfg, sec.Errorf("mode", "must be %q or %q, not %q", ModeStore, ModeHold, cfg.Mode)
	}
	if cfg.Retention <= 0 {
		return cfg, sec.Errorf("retention", "must be positive")
	}
	if cfg.MaxSize < 0 {
		return cfg, sec.Errorf("max_size", "must not be negative (0: no cap)")
	}
	if cfg.MaxMessageSize <= 0 {
		return cfg, sec.Errorf("max_message_size", "must be positive")
	}
	if cfg.ReleaseVia == "" || !strings.Contains(cfg.ReleaseVia, ":") {
		return cfg, sec.Errorf("release_via", "want HOST:PORT of an MTA listener without milters, not %q", cfg.ReleaseVia)
	}
	if cfg.ReleaseHelo == "" || strings.ContainsAny(cfg.ReleaseHelo, " \t\r\n") {
		return cfg, sec.Errorf("release_helo", "must be a host name")
	}
	if cfg.ReleaseTimeout <= 0 {
		return cfg, sec.Errorf("release_timeout", "must be positive")
	}
	if cfg.PurgeInterval < 0 {
		return cfg, sec.Errorf("purge_interval", "must not be negative (0: only `moat quarantine purge`)")
	}
	for i, s := range cfg.SpamdServers {
		srv, err := servers.Parse(s)
		if err != nil {
			return cfg, sec.Errorf(fmt.Sprintf("spamd_servers[%d]", i), "%v", err)
		}
		if srv.Network == "unix" {
			cfg.SpamdServers[i] = "unix:" + f.Abs(srv.Addr)
		}
	}
	if !sec.Sub("local_domains").Present() && len(cfg.LocalDomains) == 0 {
		var relay struct {
			LocalDomains []string `toml:"local_domains"`
		}
		if rs := f.Section("checks.relay"); rs.Present() {
			_ = rs.Pick("local_domains").Decode(&relay)
		}
		cfg.LocalDomains = relay.LocalDomains
	}
	for i, d := range cfg.LocalDomains {
		cfg.LocalDomains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	return cfg, nil
}

// Quarantine is the quarantine of one configuration: its settings and the store that holds the messages.
// All methods are safe for concurrent use.
type Quarantine struct {
	cfg   Config
	store func() (store.Store, error)
	log   *slog.Logger
	spamd *spamdClient
	// now is the clock (tests set it).
	now func() time.Time
	// sizeGauge reports the quarantine's size after a change (the metrics package's gauges).
	report func(held int, bytes int64)
}

// New returns the quarantine of cfg, keeping its messages in the store that st returns (opened on first use).
func New(cfg Config, st func() (store.Store, error), log *slog.Logger) (*Quarantine, error) {
	if log == nil {
		log = slog.Default()
	}
	q := &Quarantine{cfg: cfg, store: st, log: log, now: time.Now, report: func(int, int64) {}}
	if len(cfg.SpamdServers) > 0 {
		c, err := newSpamdClient(cfg)
		if err != nil {
			return nil, config.KeyErrorf("spamd_servers", "%v", err)
		}
		q.spamd = c
	}
	return q, nil
}

// Config returns the quarantine's settings.
func (q *Quarantine) Config() Config { return q.cfg }

// SetReport sets the function told the number of held messages and the bytes stored after each change and
// purge (the metrics gauges).
func (q *Quarantine) SetReport(fn func(held int, bytes int64)) { q.report = fn }

// FromConfig builds the quarantine of the [quarantine] table of f with the store of [store] (SQLite creates
// its database; Redis may be down for now); close releases the store. For the web review UI and long-running
// users. Without a [quarantine] table it returns an error.
func FromConfig(f *config.File, log *slog.Logger) (q *Quarantine, close func() error, err error) {
	return open(f, log, func(f *config.File, log *slog.Logger) (store.Store, func() error, error) {
		return store.FromConfig(f, log)
	})
}

// Load builds the quarantine like FromConfig for command-line tools: it never creates an SQLite database,
// and a Redis server must answer.
func Load(ctx context.Context, f *config.File, log *slog.Logger) (q *Quarantine, close func() error, err error) {
	return open(f, log, func(f *config.File, log *slog.Logger) (store.Store, func() error, error) {
		st, err := store.Load(ctx, f)
		if err != nil {
			return nil, nil, err
		}
		return st, st.Close, nil
	})
}

func open(f *config.File, log *slog.Logger, openStore func(*config.File, *slog.Logger) (store.Store, func() error, error)) (*Quarantine, func() error, error) {
	sec := f.Section(Table)
	if !sec.Present() {
		return nil, nil, &config.Error{File: f.Path, Key: Table, Msg: "no [quarantine] table: moat keeps no quarantine"}
	}
	cfg, err := Decode(f)
	if err != nil {
		return nil, nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	st, closeStore, err := openStore(f, log)
	if err != nil {
		return nil, nil, err
	}
	q, err := New(cfg, func() (store.Store, error) { return st, nil }, log)
	if err != nil {
		closeStore()
		return nil, nil, sec.Locate(err)
	}
	return q, closeStore, nil
}

// StartPurger runs Purge every purge_interval until stop is called; none with purge_interval = 0.
func (q *Quarantine) StartPurger() (stop func() error) {
	if q.cfg.PurgeInterval <= 0 {
		return func() error { return nil }
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(q.cfg.PurgeInterval.D())
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				n, err := q.Purge(ctx, q.now())
				cancel()
				if err != nil {
					q.log.Warn("quarantine: purge failed", "err", err)
				} else if n > 0 {
					q.log.Info("quarantine: purged", "n", n)
				}
			}
		}
	}()
	return func() error {
		close(done)
		<-finished
		return nil
	}
}

func (q *Quarantine) st() (store.Store, error) {
	st, err := q.store()
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	return st, nil
}

// isLocal reports whether address a is in one of the local domains.
func (q *Quarantine) isLocal(a string) bool {
	p, err := addr.Parse(a)
	if err != nil || p.Null() {
		return false
	}
	d := p.Domain
	for _, ld := range q.cfg.LocalDomains {
		if d == ld {
			return true
		}
	}
	return false
}

// errStore wraps a store error: ErrNotFound becomes the quarantine's.
func errStore(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	return err
}
