package quarantine

import (
	"context"
	"fmt"
	"io"

	"github.com/moatmail/moat/scanners/servers"
	"github.com/moatmail/moat/scanners/spamc"
)

// spamdClient teaches spamd's Bayes database from quarantined messages (TELL).
type spamdClient struct {
	c    *spamc.Client
	user string
}

func newSpamdClient(cfg Config) (*spamdClient, error) {
	var list []servers.Server
	for _, s := range cfg.SpamdServers {
		srv, err := servers.Parse(s)
		if err != nil {
			return nil, err
		}
		list = append(list, srv)
	}
	return &spamdClient{c: spamc.NewClient(list, spamc.ClientOptions{}), user: cfg.SpamdUser}, nil
}

// tell sends message id to spamd with TELL for class; it reports whether spamd's database changed.
func (q *Quarantine) tell(ctx context.Context, id string, class spamc.Class) (bool, error) {
	if q.spamd == nil {
		return false, fmt.Errorf("quarantine: no spamd_servers in [quarantine]: nothing to learn with")
	}
	rec, err := q.Get(ctx, id)
	if err != nil {
		return false, err
	}
	if rec.Mode == ModeHold {
		return false, fmt.Errorf("quarantine: %s is in the MTA's hold queue (queue id %s): moat has no copy to learn from", id, rec.QueueID)
	}
	st, err := q.st()
	if err != nil {
		return false, err
	}
	open := func() io.Reader {
		rc, err := st.QuarBody(ctx, id)
		if err != nil {
			return errReader{err}
		}
		return rc
	}
	changed, err := q.spamd.c.Tell(ctx, class, q.spamd.user, spamc.Body{Open: open, Size: rec.Size})
	if err != nil {
		return false, fmt.Errorf("quarantine: tell spamd %s: %w", class, err)
	}
	return changed, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
