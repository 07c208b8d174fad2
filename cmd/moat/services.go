package main

// The services checks share, built by this composition root from their top-level tables and handed to
// policy.Build: the DNS resolver ([dns]) and the state store ([store]). Each is built only when a check of the
// configuration asks for it, so a configuration without greylisting creates no database.
import (
	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/metrics"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/store"
	"github.com/moatmail/moat/web"
)

// services returns the services of a configuration, for serve, reload, scan and check-config alike.
func services() policy.Services {
	return policy.Services{
		Tables:   []string{resolver.Table, store.Table, metrics.Table, web.Table},
		Resolver: resolver.FromConfig,
		Store:    store.FromConfig,
	}
}
