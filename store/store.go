// Package store implements moat's state store: a small key/value store with expiry, plus the atomic
// greylisting decision, behind one [Store] interface with two backends.
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
// errors and the caller applies its policy (greylisting accepts by default).
//
// # Configuration
//
// The top-level [store] table:
//
//	[store]
//	backend = "sqlite"           # or "redis"
//	path = "moat.db"             # SQLite file, relative to the working directory
//	sqlite_synchronous = "normal" # or "full": survive power loss, not only a crash of moat
//	purge_interval = "10m"       # SQLite: how often expired rows are deleted
//	redis_addr = "127.0.0.1:6379"
//	redis_password = ""
//	redis_db = 0
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
	"os"
	"path/filepath"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
)

func init() {
	policy.RegisterSection("store")
}

// ErrNotFound is returned when a key or entry does not exist (or has expired).
var ErrNotFound = errors.New("store: not found")

// Store is the state store. All methods are safe for concurrent use.
type Store interface {
	// Get returns the value stored under key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Set stores value under key; it expires after ttl (never when ttl is 0).
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Keys lists the live keys that start with prefix, sorted.
	Keys(ctx context.Context, prefix string) ([]string, error)

	// Greylist makes one greylisting decision for a triplet, atomically: two concurrent first attempts of
	// the same triplet create exactly one record, and exactly one of them is told it is new.
	Greylist(ctx context.Context, req GreyRequest) (GreyResult, error)
	// GreyEntry returns the live entry with the given ID, or ErrNotFound.
	GreyEntry(ctx context.Context, id string, now time.Time) (GreyEntry, error)
	// GreyEntries calls fn for every live greylist entry (in no particular order) until fn returns false.
	GreyEntries(ctx context.Context, now time.Time, fn func(GreyEntry) bool) error
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

// Config is the [store] table.
type Config struct {
	Backend       string          `toml:"backend"`
	Path          string          `toml:"path"`
	Synchronous   string          `toml:"sqlite_synchronous"`
	PurgeInterval config.Duration `toml:"purge_interval"`
	RedisAddr     string          `toml:"redis_addr"`
	RedisPassword string          `toml:"redis_password"`
	RedisDB       int             `toml:"redis_db"`
	RedisPrefix   string          `toml:"redis_prefix"`
	RedisTimeout  config.Duration `toml:"redis_timeout"`
}

// DefaultConfig is the configuration used when [store] is absent: SQLite in moat.db in the working directory.
func DefaultConfig() Config {
	return Config{
		Backend:       "sqlite",
		Path:          "moat.db",
		Synchronous:   "normal",
		PurgeInterval: config.Duration(10 * time.Minute),
		RedisAddr:     "127.0.0.1:6379",
		RedisPrefix:   "moat:",
		RedisTimeout:  config.Duration(2 * time.Second),
	}
}

// Decode reads and validates the [store] table of f; errors name the file, line and key.
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
		if err := checkWritableDir(filepath.Dir(cfg.Path)); err != nil {
			return cfg, sec.Errorf("path", "%v", err)
		}
		if cfg.Synchronous != "normal" && cfg.Synchronous != "full" {
			return cfg, sec.Errorf("sqlite_synchronous", "must be \"normal\" or \"full\", not %q", cfg.Synchronous)
		}
	case "redis":
		if cfg.RedisAddr == "" {
			return cfg, sec.Errorf("redis_addr", "must not be empty")
		}
		if cfg.RedisDB < 0 {
			return cfg, sec.Errorf("redis_db", "must not be negative")
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

// Load decodes the [store] table of f and opens the store; for command-line tools.
func Load(ctx context.Context, f *config.File) (Store, error) {
	cfg, err := Decode(f)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg)
}

// FromEnv returns the configuration's store, opened once per configuration and shared by every check that
// asks; it closes when the configuration is retired. For SQLite it also starts the purge timer.
func FromEnv(env *policy.Env) (Store, error) {
	v, err := env.Shared("store", func() (any, error) {
		cfg, err := Decode(env.Config)
		if err != nil {
			return nil, err
		}
		st, err := Open(context.Background(), cfg)
		if err != nil {
			key := "path"
			if cfg.Backend == "redis" {
				key = "redis_addr"
			}
			return nil, env.Config.Section("store").Errorf(key, "%v", err)
		}
		if rs, ok := st.(*Redis); ok {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.RedisTimeout.D())
			if err := rs.Ping(ctx); err != nil {
				env.Logger.Warn("store: redis does not answer yet; it will be retried", "addr", cfg.RedisAddr, "err", err)
			}
			cancel()
		}
		stop := func() {}
		if st.Backend() == "sqlite" && cfg.PurgeInterval > 0 {
			stop = startPurger(st, cfg.PurgeInterval.D(), func(n int, err error) {
				if err != nil {
					env.Logger.Warn("store: purge failed", "err", err)
				} else if n > 0 {
					env.Logger.Debug("store: purged expired entries", "n", n)
				}
			})
		}
		env.OnClose(func() error {
			stop()
			return st.Close()
		})
		return st, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(Store), nil
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
