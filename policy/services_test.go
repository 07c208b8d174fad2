package policy

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/store"
)

// countingServices builds real resolvers (pointed at a port nothing listens on: no query is sent) and counts
// how often each service is built and the store closed.
type countingServices struct {
	mu                            sync.Mutex
	resolvers, stores, storeClose int
}

func (c *countingServices) services() Services {
	return Services{
		Tables: []string{"dns", "store"},
		Resolver: func(*config.File) (*resolver.Resolver, error) {
			c.mu.Lock()
			c.resolvers++
			c.mu.Unlock()
			return resolver.New(resolver.Config{Servers: []string{"127.0.0.1:9"}, Timeout: config.Duration(1e9)})
		},
		Store: func(*config.File, *slog.Logger) (store.Store, func() error, error) {
			c.mu.Lock()
			c.stores++
			c.mu.Unlock()
			return nil, func() error { c.mu.Lock(); c.storeClose++; c.mu.Unlock(); return nil }, nil
		},
	}
}

func buildWith(t *testing.T, toml string, svc Services) (*Engine, error) {
	t.Helper()
	fakes = map[string]Check{
		"dnsbl":    fakeConnect{&fake{name: "dnsbl", kind: KindAntispam, connect: func(*Session) []Finding { return nil }}},
		"spf":      fakeMail{&fake{name: "spf", kind: KindAntispam, mail: func(*Session) []Finding { return nil }}},
		"greylist": fakeRcpt{&fake{name: "greylist", kind: KindAntispam, rcpt: func(*Session, *Recipient) []Finding { return nil }}},
	}
	f, err := config.Parse("moat.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	return Build(f, nil, svc)
}

// TestServicesBuiltOnlyWhenACheckAsks: no DNS check, no resolver; no greylisting, no store; two DNS checks
// share one resolver; the store closes when the engine is retired.
func TestServicesBuiltOnlyWhenACheckAsks(t *testing.T) {
	var c countingServices
	e, err := buildWith(t, "[dns]\n[store]\n[checks.greylist]\nenabled = false\nuse_store = true\n", c.services())
	if err != nil {
		t.Fatal(err)
	}
	e.Retire()
	if c.resolvers != 0 || c.stores != 0 {
		t.Fatalf("built %d resolvers and %d stores for a configuration whose only check is off", c.resolvers, c.stores)
	}
	e, err = buildWith(t, "[checks.dnsbl]\nuse_resolver = true\n[checks.spf]\nuse_resolver = true\n[checks.greylist]\nuse_store = true\n", c.services())
	if err != nil {
		t.Fatal(err)
	}
	if c.resolvers != 1 || c.stores != 1 {
		t.Fatalf("built %d resolvers and %d stores, want one each", c.resolvers, c.stores)
	}
	if c.storeClose != 0 {
		t.Fatal("store closed while the engine is in use")
	}
	e.Retire()
	if c.storeClose != 1 {
		t.Fatalf("store closed %d times at retirement, want once", c.storeClose)
	}
}

// TestServiceTables: a top-level table is accepted only when the services declare it, and a check
// asking for a service nobody provides gets an error, not a nil resolver.
func TestServiceTables(t *testing.T) {
	var c countingServices
	if _, err := buildWith(t, "[dns]\n", Services{}); err == nil || !strings.Contains(err.Error(), "moat.toml:1: dns: unknown table") {
		t.Fatalf("[dns] without services: %v", err)
	}
	e, err := buildWith(t, "[dns]\n[store]\n", c.services())
	if err != nil {
		t.Fatalf("[dns] and [store] with the services declaring them: %v", err)
	}
	e.Retire()
	if _, err := buildWith(t, "[checks.spf]\nuse_resolver = true\n", Services{}); err == nil || !strings.Contains(err.Error(), "no DNS resolver") {
		t.Fatalf("resolver without services: %v", err)
	}
	if _, err := buildWith(t, "[checks.greylist]\nuse_store = true\n", Services{}); err == nil || !strings.Contains(err.Error(), "no state store") {
		t.Fatalf("store without services: %v", err)
	}
	failing := c.services()
	failing.Resolver = func(f *config.File) (*resolver.Resolver, error) {
		return nil, f.Section("dns").Errorf("servers", "no")
	}
	_, err = buildWith(t, "[dns]\nservers = []\n[checks.spf]\nuse_resolver = true\n", failing)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "dns.servers" || ce.Line != 2 {
		t.Fatalf("a resolver's configuration error: %v, want it at moat.toml:2 dns.servers", err)
	}
}
