package policy

import (
	"fmt"
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
