// Package store implements moat's state store: greylisting triplets and client auto-whitelist counts, with
// the atomic greylisting decision, behind one [Store] interface with two backends. It sits below policy: the
// composition root (cmd/moat) opens it with [FromConfig] and hands it to the checks.
//
// # Backends
//
// SQLite (the default) keeps the state in one file through modernc.org/sqlite (pure Go, no cgo), in WAL mode.
// Every greylisting decision is one write transaction (a read of the triplet and client rows and one upsert),
// so a crash of the process never loses a committed decision; with sqlite_synchronous = "full" a power loss
// does not either. Expired rows go by an indexed delete on a timer. Operators can inspect the file with the
// sqlite3 shell while the daemon runs.
//
// Redis keeps the state in a redis-server shared by several moat instances (one per MX host), so that a
// triplet greylisted by one instance passes on another after the delay, and auto-whitelisting is shared.
// Every decision is one Lua script (atomic on the server) and every key carries its native expiry, so Redis
// needs no purge. go-redis reconnects on its own after a connection loss; until then, operations return
// errors and the caller applies its policy (greylisting accepts by default). A server that refuses the
// connection's set-up (wrong password, missing database) is a configuration error instead.
//
// # Configuration
//
// The top-level [store] table:
//
//	[store]
//	backend = "sqlite"           # or "redis"
//	path = "moat.db"             # SQLite file, relative to the directory of the configuration file
//	sqlite_synchronous = "normal" # or "full": survive power loss, not only a crash of moat
//	purge_interval = "10m"       # SQLite: how often expired rows are deleted
//	redis_addr = "127.0.0.1:6379"
//	redis_password = ""
//	redis_db = 0                 # 0 to redis_databases-1
//	redis_databases = 16         # the server's "databases" setting, for checking redis_db
//	redis_prefix = "moat:"
//	redis_timeout = "2s"
//
// # Clock
//
// Times are passed in by the caller (the greylisting check has an injected clock), never read from the
// store's host; instances that share a Redis need synchronised clocks (NTP), as they do for mail anyway.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/redis/go-redis/v9"
)

// Table is the top-level configuration table of the store.
const Table = "store"

// ErrNotFound is returned when an entry does not exist (or has expired).
var ErrNotFound = errors.New("store: not found")

// Store is the state store. All methods are safe for concurrent use.
type Store interface {
	Quarantine
	// Greylist makes one greylisting decision for a triplet, atomically: two concurrent first attempts of
	// the same triplet create exactly one record, and exactly one of them is told it is new.
	Greylist(ctx context.Context, req GreyRequest) (GreyResult, error)
	// GreyEntry returns the live entry with the given ID, or ErrNotFound.
	GreyEntry(ctx context.Context, id string, now time.Time) (GreyEntry, error)
	// GreyEntries calls fn for every live greylist entry (in no particular order) until fn returns false.
	GreyEntries(ctx context.Context, now time.Time, fn func(GreyEntry) bool) error
	// GreyList returns the live greylist entries that match q, oldest first (by first attempt), at most
	// q.Limit of them. SQLite filters, sorts and limits in SQL; Redis has no secondary index and scans.
	GreyList(ctx context.Context, now time.Time, q GreyQuery) ([]GreyEntry, error)
	// GreyRelease lets a pending triplet pass now: it becomes passed and expires after expiry without
	// traffic. The next message of the triplet is delivered (with its real delay in the header).
	GreyRelease(ctx context.Context, id string, now time.Time, expiry time.Duration) error
	// GreyClient returns the auto-whitelist record of a client key, or ErrNotFound.
	GreyClient(ctx context.Context, client string, now time.Time) (ClientEntry, error)

	// Purge deletes expired entries and returns how many went. Redis expires keys itself and returns 0.
	Purge(ctx context.Context, now time.Time) (int, error)
	// Backend names the backend: "sqlite" or "redis".
	Backend() string
	// Close releases the store.
	Close() error
}

// GreyQuery selects greylist entries for GreyList; zero fields match everything.
type GreyQuery struct {
	State    GreyState // pending or passed
	Client   string    // substring of the client key, case-insensitive (ASCII)
	Sender   string    // substring of the sender, case-insensitive (ASCII)
	Rcpt     string    // substring of the recipient, case-insensitive (ASCII)
	IDPrefix string    // prefix of the ID (lower-case hexadecimal)
	Limit    int       // at most this many entries; 0: all
}

// match reports whether e is selected by q (for backends that filter outside the database).
func (q GreyQuery) match(e GreyEntry) bool {
	return (q.State == "" || e.State == q.State) && containsFoldASCII(e.Client, q.Client) &&
		containsFoldASCII(e.Sender, q.Sender) && containsFoldASCII(e.Rcpt, q.Rcpt) &&
		strings.HasPrefix(e.ID, q.IDPrefix)
}

// containsFoldASCII is strings.Contains ignoring ASCII case, as SQLite's LIKE does.
func containsFoldASCII(s, sub string) bool {
	return sub == "" || strings.Contains(asciiLower(s), asciiLower(sub))
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Config is the [store] table.
type Config struct {
	Backend       string          `toml:"backend"`
	Path          string          `toml:"path"`
	Synchronous   string          `toml:"sqlite_synchronous"`
	PurgeInterval config.Duration `toml:"purge_interval"`
	RedisAddr     string          `toml:"redis_addr"`
	RedisPassword string          `toml:"redis_password"`
	RedisDB       int             `toml:"redis_db"`
	RedisDBs      int             `toml:"redis_databases"`
	RedisPrefix   string          `toml:"redis_prefix"`
	RedisTimeout  config.Duration `toml:"redis_timeout"`
}

// DefaultConfig is the configuration used when [store] is absent: SQLite in moat.db next to the
// configuration file.
func DefaultConfig() Config {
	return Config{
		Backend:       "sqlite",
		Path:          "moat.db",
		Synchronous:   "normal",
		PurgeInterval: config.Duration(10 * time.Minute),
		RedisAddr:     "127.0.0.1:6379",
		RedisDBs:      16,
		RedisPrefix:   "moat:",
		RedisTimeout:  config.Duration(2 * time.Second),
	}
}

// Decode reads and validates the [store] table of f; errors name the file, line and key. Path is returned as
// written; a relative path means relative to the directory of the configuration file (see Resolve), so that
// every command (serve, scan, check-config, greylist) uses the same database wherever it is started.
func Decode(f *config.File) (Config, error) {
	sec := f.Section("store")
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return cfg, err
	}
	switch cfg.Backend {
	case "sqlite":
		if cfg.Path == "" {
			return cfg, sec.Errorf("path", "must not be empty")
		}
		if err := checkWritableDir(filepath.Dir(f.Abs(cfg.Path))); err != nil {
			return cfg, sec.Errorf("path", "%v", err)
		}
		if cfg.Synchronous != "normal" && cfg.Synchronous != "full" {
			return cfg, sec.Errorf("sqlite_synchronous", "must be \"normal\" or \"full\", not %q", cfg.Synchronous)
		}
	case "redis":
		if cfg.RedisAddr == "" {
			return cfg, sec.Errorf("redis_addr", "must not be empty")
		}
		if cfg.RedisDBs < 1 {
			return cfg, sec.Errorf("redis_databases", "must be positive")
		}
		if cfg.RedisDB < 0 {
			return cfg, sec.Errorf("redis_db", "must not be negative")
		}
		if cfg.RedisDB >= cfg.RedisDBs {
			return cfg, sec.Errorf("redis_db", "must be between 0 and %d (redis_databases = %d, the server's \"databases\")",
				cfg.RedisDBs-1, cfg.RedisDBs)
		}
		if cfg.RedisTimeout <= 0 {
			return cfg, sec.Errorf("redis_timeout", "must be positive")
		}
	default:
		return cfg, sec.Errorf("backend", "must be \"sqlite\" or \"redis\", not %q", cfg.Backend)
	}
	if cfg.PurgeInterval < 0 {
		return cfg, sec.Errorf("purge_interval", "must not be negative")
	}
	return cfg, nil
}

// Resolve decodes the [store] table of f (see Decode) and makes a relative SQLite path absolute, relative to
// the directory of the configuration file.
func Resolve(f *config.File) (Config, error) {
	cfg, err := Decode(f)
	if err == nil && cfg.Path != "" {
		cfg.Path = f.Abs(cfg.Path)
	}
	return cfg, err
}

// checkWritableDir makes sure the database directory exists and that moat may create files in it (SQLite
// needs the -wal and -shm files next to the database).
func checkWritableDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("directory of the database: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".moat-write-test-*")
	if err != nil {
		return fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return nil
}

// Open opens the store described by cfg. A Redis store opens even when the server is down (it reconnects on
// its own); Ping reports whether it answers.
func Open(ctx context.Context, cfg Config) (Store, error) {
	switch cfg.Backend {
	case "sqlite", "":
		return OpenSQLite(ctx, cfg.Path, cfg.Synchronous == "full")
	case "redis":
		return OpenRedis(cfg), nil
	}
	return nil, fmt.Errorf("store: unknown backend %q", cfg.Backend)
}

// Load decodes the [store] table of f and opens the store; for command-line tools. It never creates an
// SQLite database (a mistyped path must not leave an empty database behind): the error names the absolute
// path. A Redis store must answer; a reply error (wrong password, bad database) is reported at its key.
func Load(ctx context.Context, f *config.File) (Store, error) {
	cfg, err := Resolve(f)
	if err != nil {
		return nil, err
	}
	switch cfg.Backend {
	case "sqlite", "":
		return OpenSQLiteExisting(ctx, cfg.Path, cfg.Synchronous == "full")
	}
	st, err := Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if rs, ok := st.(*Redis); ok {
		pctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout.D())
		err := rs.Ping(pctx)
		cancel()
		if err != nil {
			st.Close()
			if key := redisErrorKey(err); key != "" {
				return nil, f.Section("store").Errorf(key, "%v", err)
			}
			return nil, err
		}
	}
	return st, nil
}

// redisErrorKey returns the configuration key a reply error of the Redis server points at, or "" when the
// error is not one that configuration can fix: a network error, or a transient reply such as "LOADING" or
// "BUSY" (the server is starting or running a long script; go-redis will be retried). A wrong password or
// user is redis_password, a database the server does not have is redis_db.
func redisErrorKey(err error) string {
	var re redis.Error
	if !errors.As(err, &re) || errors.Is(err, redis.Nil) {
		return ""
	}
	msg := strings.ToUpper(err.Error())
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "INVALID PASSWORD"),
		strings.Contains(msg, "INVALID USERNAME"), strings.Contains(msg, "AUTH"):
		return "redis_password"
	case strings.Contains(msg, "DB INDEX"), strings.Contains(msg, "INVALID DB"):
		return "redis_db"
	}
	return ""
}

// FromConfig opens the store of the [store] table of f for the daemon (and `moat scan`): SQLite creates its
// database, Redis may be down for now (go-redis reconnects). For SQLite it also starts the purge timer; close
// stops the timer and closes the store. Errors name the file, line and key.
func FromConfig(f *config.File, log *slog.Logger) (st Store, close func() error, err error) {
	cfg, err := Resolve(f)
	if err != nil {
		return nil, nil, err
	}
	sec := f.Section(Table)
	st, err = Open(context.Background(), cfg)
	if err != nil {
		key := "path"
		if cfg.Backend == "redis" {
			key = "redis_addr"
		}
		return nil, nil, sec.Errorf(key, "%v", err)
	}
	if rs, ok := st.(*Redis); ok {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.RedisTimeout.D())
		err := rs.Ping(ctx)
		cancel()
		// A server that is down or unreachable may come back (go-redis reconnects), so moat starts and
		// greylisting applies on_error meanwhile. A server that answers with an error (WRONGPASS, "DB
		// index is out of range") will answer the same to every decision: that is a configuration error,
		// and starting anyway would silently turn greylisting off.
		if key := redisErrorKey(err); key != "" {
			st.Close()
			return nil, nil, sec.Errorf(key, "redis refuses the connection: %v", err)
		}
		if err != nil {
			log.Warn("store: redis does not answer yet; it will be retried", "addr", cfg.RedisAddr, "err", err)
		}
	}
	stop := func() {}
	if st.Backend() == "sqlite" && cfg.PurgeInterval > 0 {
		stop = startPurger(st, cfg.PurgeInterval.D(), func(n int, err error) {
			if err != nil {
				log.Warn("store: purge failed", "err", err)
			} else if n > 0 {
				log.Debug("store: purged expired entries", "n", n)
			}
		})
	}
	return st, func() error {
		stop()
		return st.Close()
	}, nil
}

// Probe reports whether st answers: one read of a greylist entry that never exists (not found is the healthy
// answer), for the health endpoint.
func Probe(ctx context.Context, st Store) error {
	if _, err := st.GreyEntry(ctx, "moat-health-probe", time.Now()); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s store does not answer: %w", st.Backend(), err)
	}
	return nil
}

// startPurger runs Purge every interval until the returned stop function is called.
func startPurger(st Store, interval time.Duration, report func(int, error)) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				n, err := st.Purge(ctx, time.Now())
				cancel()
				report(n, err)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
