// Package quarantine keeps the messages a policy verdict holds, so that a person can review, release or
// delete them and teach spamd from them.
package quarantine

import (
	"errors"
	"log/slog"

	"github.com/moatmail/moat/config"
)

// Table is the top-level configuration table of the quarantine.
const Table = "quarantine"

// Quarantine is the quarantine of one configuration: its settings and the store that holds the messages.
// All methods are safe for concurrent use.
type Quarantine struct {
	log *slog.Logger
}

// FromConfig builds the quarantine of the [quarantine] table of f, with the store of [store]; close stops its
// purge timer and releases the store. Without a [quarantine] table it returns nil, nil, nil.
func FromConfig(f *config.File, log *slog.Logger) (q *Quarantine, close func() error, err error) {
	return nil, nil, errors.New("quarantine: not implemented yet")
}
