package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/moatmail/moat/config"
)

// SetupFunc builds a check from its configuration table ([checks.NAME], without the engine's own keys
// enabled, dry_run and timeout). It validates the table and returns errors made with sec.Errorf, so that they
// name the file, line and key.
type SetupFunc func(sec *config.Section, env *Env) (Check, error)

var (
	regMu    sync.Mutex
	registry = map[string]SetupFunc{}
	sections = map[string]bool{"milter": true, "policy": true, "log": true, "checks": true}
)

// Register makes a check available under name. Call it from the check package's init(). The name must also
// appear in Order (order.go), which fixes when the check runs.
func Register(name string, setup SetupFunc) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("policy: check registered twice: " + name)
	}
	registry[name] = setup
}

// RegisterSection declares a top-level configuration table used by a shared service (e.g. "dns" for the
// resolver, "store" for the state store), so that configuration validation knows it.
func RegisterSection(name string) {
	regMu.Lock()
	defer regMu.Unlock()
	sections[name] = true
}

// Registered lists the registered check names in run order.
func Registered() []string {
	regMu.Lock()
	defer regMu.Unlock()
	var out []string
	for _, n := range Order {
		if _, ok := registry[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

func knownSections() []string {
	regMu.Lock()
	defer regMu.Unlock()
	out := make([]string, 0, len(sections))
	for s := range sections {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Env gives checks what they share: the configuration file (for service tables such as [dns]), the logger,
// and services built once per configuration (the resolver, the state store) through Shared.
type Env struct {
	Config *config.File
	Logger *slog.Logger

	mu      sync.Mutex
	shared  map[string]*sharedService
	closers []func() error
	probes  []healthProbe
}

type healthProbe struct {
	name  string
	probe func(context.Context) error
}

// OnHealth registers a probe of a shared service (the state store) that the health endpoint runs: the
// service is healthy when probe returns nil within the caller's deadline.
func (e *Env) OnHealth(name string, probe func(context.Context) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.probes = append(e.probes, healthProbe{name, probe})
}

// health runs every probe and returns the failures, each named after its service.
func (e *Env) health(ctx context.Context) error {
	e.mu.Lock()
	probes := append([]healthProbe(nil), e.probes...)
	e.mu.Unlock()
	var errs []error
	for _, p := range probes {
		if err := p.probe(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
		}
	}
	return errors.Join(errs...)
}

// NewEnv returns an environment for building checks from f.
func NewEnv(f *config.File, logger *slog.Logger) *Env {
	if logger == nil {
		logger = slog.Default()
	}
	return &Env{Config: f, Logger: logger, shared: map[string]*sharedService{}}
}

// Shared returns the service stored under key, building it with build the first time; concurrent callers
// wait for that one build. build may call OnClose (and Shared for other keys): no lock is held while it runs.
func (e *Env) Shared(key string, build func() (any, error)) (any, error) {
	e.mu.Lock()
	sh, ok := e.shared[key]
	if !ok {
		sh = &sharedService{}
		e.shared[key] = sh
	}
	e.mu.Unlock()
	sh.once.Do(func() { sh.v, sh.err = build() })
	return sh.v, sh.err
}

type sharedService struct {
	once sync.Once
	v    any
	err  error
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

func lookupSetup(name string) (SetupFunc, bool) {
	regMu.Lock()
	defer regMu.Unlock()
	s, ok := registry[name]
	return s, ok
}

func checkOrder() error {
	regMu.Lock()
	defer regMu.Unlock()
	in := map[string]bool{}
	for _, n := range Order {
		in[n] = true
	}
	for n := range registry {
		if !in[n] {
			return fmt.Errorf("policy: check %q is registered but missing from Order in order.go", n)
		}
	}
	return nil
}
