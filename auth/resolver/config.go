package resolver

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/moatmail/moat/config"
)

// Table is the top-level configuration table of the resolver.
const Table = "dns"

// Config is the [dns] table.
type Config struct {
	// Servers are host:port addresses; a host without port gets port 53. Empty: /etc/resolv.conf.
	Servers []string `toml:"servers"`
	// Timeout bounds one query attempt to one server.
	Timeout config.Duration `toml:"timeout"`
	// Retries is the number of further attempts after the first one, rotating over Servers.
	Retries int `toml:"retries"`
	// EDNS0Size is the advertised UDP payload size (RFC 6891); 0 turns EDNS0 off.
	EDNS0Size int `toml:"edns0_size"`
	// CacheSize bounds the number of cached answers; 0 turns the cache off.
	CacheSize int `toml:"cache_size"`
	// CacheMaxBytes bounds the memory of the cache: the wire size of the cached records plus a fixed
	// overhead per entry; 0 turns the cache off.
	CacheMaxBytes int64 `toml:"cache_max_bytes"`
	// MaxTTL caps the lifetime of cached positive answers.
	MaxTTL config.Duration `toml:"max_ttl"`
	// NegativeTTL caps the lifetime of cached negative answers (NXDOMAIN, no data).
	NegativeTTL config.Duration `toml:"negative_ttl"`
}

// DefaultConfig returns the defaults of the [dns] table (servers empty: use /etc/resolv.conf).
func DefaultConfig() Config {
	return Config{
		Timeout:       config.Duration(2 * time.Second),
		Retries:       2,
		EDNS0Size:     1232,
		CacheSize:     20000,
		CacheMaxBytes: 32 << 20,
		MaxTTL:        config.Duration(time.Hour),
		NegativeTTL:   config.Duration(5 * time.Minute),
	}
}

// ResolvConf is the file read for servers when none are configured.
var ResolvConf = "/etc/resolv.conf"

// validate checks the values of cfg other than the servers; errors are *config.KeyError naming the key.
func (cfg Config) validate() error {
	switch {
	case cfg.Timeout <= 0:
		return config.KeyErrorf("timeout", "resolver: timeout must be positive")
	case cfg.Retries < 0 || cfg.Retries > 10:
		return config.KeyErrorf("retries", "resolver: retries must be between 0 and 10")
	case cfg.EDNS0Size != 0 && (cfg.EDNS0Size < 512 || cfg.EDNS0Size > 65535):
		return config.KeyErrorf("edns0_size", "resolver: edns0_size must be 0 or between 512 and 65535")
	case cfg.CacheSize < 0:
		return config.KeyErrorf("cache_size", "resolver: cache_size must not be negative")
	case cfg.CacheMaxBytes < 0:
		return config.KeyErrorf("cache_max_bytes", "resolver: cache_max_bytes must not be negative")
	// TTLs are whole seconds: a cap below one second would turn caching off without saying so.
	case cfg.MaxTTL < 0 || (cfg.MaxTTL > 0 && cfg.MaxTTL.D() < time.Second):
		return config.KeyErrorf("max_ttl", `resolver: max_ttl must be "0s" (no positive caching) or at least 1s`)
	case cfg.NegativeTTL < 0 || (cfg.NegativeTTL > 0 && cfg.NegativeTTL.D() < time.Second):
		return config.KeyErrorf("negative_ttl", `resolver: negative_ttl must be "0s" (no negative caching) or at least 1s`)
	}
	return nil
}

func normalizeServer(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("resolver: empty server address")
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s, nil
	}
	h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if net.ParseIP(h) == nil {
		return "", fmt.Errorf("resolver: server %q is not an IP address or IP:port", s)
	}
	return net.JoinHostPort(h, "53"), nil
}

// FromConfig builds the resolver from the [dns] table of f over the defaults; errors name the file, line and
// key.
func FromConfig(f *config.File) (*Resolver, error) {
	sec := f.Section(Table)
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return nil, err
	}
	r, err := New(cfg)
	return r, sec.Locate(err)
}
