package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/store"
)

// Services are what the composition root (cmd/moat) hands to Build for the checks: the top-level tables that
// are not checks, and how to build the services that checks share from them. A service is built the first
// time a check of the configuration asks for it (Env.Resolver, Env.Store), once per configuration, so that a
// configuration without DNS checks builds no resolver and one without greylisting opens no database.
type Services struct {
	// Tables are the top-level tables the services read (e.g. "dns", "store"), besides moat's own (milter,
	// policy, log, checks); Build refuses any other top-level table.
	Tables []string
	// Resolver builds the DNS resolver shared by the DNS checks, from the [dns] table; nil: none is available.
	Resolver func(f *config.File) (*resolver.Resolver, error)
	// Store opens the state store from the [store] table; close runs when the configuration is retired. nil:
	// none is available.
	Store func(f *config.File, log *slog.Logger) (st store.Store, close func() error, err error)
	// Holder builds the quarantine from its table, with the environment's store (Env.Store, opened on first
	// use); it returns nil when the configuration has no quarantine. nil: none is available.
	Holder func(e *Env) (Holder, error)
}

// ownTables are the top-level tables Build itself (and the milter, the logger) reads.
var ownTables = []string{"checks", "log", "milter", "policy"}

// knownTables lists the top-level tables a configuration may have, sorted.
func (s Services) knownTables() []string {
	out := append(append([]string(nil), ownTables...), s.Tables...)
	sort.Strings(out)
	return out
}

// Env gives checks what they share: the configuration file, the logger, and the services built once per
// configuration (the resolver, the state store).
type Env struct {
	Config *config.File
	Logger *slog.Logger

	svc      Services
	resolver lazy[*resolver.Resolver]
	store    lazy[store.Store]

	mu        sync.Mutex
	closers   []func() error
	openStore store.Store // the store once opened, for health probes
}

// lazy is a value built on first use; concurrent callers wait for that one build.
type lazy[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (l *lazy[T]) get(build func() (T, error)) (T, error) {
	l.once.Do(func() { l.v, l.err = build() })
	return l.v, l.err
}

// NewEnv returns an environment for building checks from f with the services svc.
func NewEnv(f *config.File, logger *slog.Logger, svc Services) *Env {
	if logger == nil {
		logger = slog.Default()
	}
	return &Env{Config: f, Logger: logger, svc: svc}
}

// Resolver returns the configuration's DNS resolver, building it the first time; every check of one
// configuration shares it (and its cache).
func (e *Env) Resolver() (*resolver.Resolver, error) {
	return e.resolver.get(func() (*resolver.Resolver, error) {
		if e.svc.Resolver == nil {
			return nil, errors.New("policy: no DNS resolver is available to checks")
		}
		return e.svc.Resolver(e.Config)
	})
}

// Store returns the configuration's state store, opening it the first time; it closes when the
// configuration is retired.
func (e *Env) Store() (store.Store, error) {
	return e.store.get(func() (store.Store, error) {
		if e.svc.Store == nil {
			return nil, errors.New("policy: no state store is available to checks")
		}
		st, closeStore, err := e.svc.Store(e.Config, e.Logger)
		if err != nil {
			return nil, err
		}
		e.OnClose(closeStore)
		e.mu.Lock()
		e.openStore = st
		e.mu.Unlock()
		return st, nil
	})
}

// health probes the services opened so far (the state store), for the health endpoint; a configuration
// whose checks use no store has nothing to probe.
func (e *Env) health(ctx context.Context) error {
	e.mu.Lock()
	st := e.openStore
	e.mu.Unlock()
	if st == nil {
		return nil
	}
	if err := store.Probe(ctx, st); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// OnClose registers f to run when the configuration is retired.
func (e *Env) OnClose(f func() error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closers = append(e.closers, f)
}

func (e *Env) close() error {
	e.mu.Lock()
	closers := e.closers
	e.closers = nil
	e.mu.Unlock()
	var first error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}
