package main

// The services checks share, built by this composition root from their top-level tables and handed to
// policy.Build: the DNS resolver ([dns]), the state store ([store]) and the quarantine ([quarantine]). Each is
// built only when the configuration asks for it, so a configuration without greylisting or quarantine creates
// no database.
import (
	"context"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/metrics"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/quarantine"
	"github.com/moatmail/moat/store"
	"github.com/moatmail/moat/web"
)

// services returns the services of a configuration, for serve, reload, scan and check-config alike.
func services() policy.Services {
	return policy.Services{
		Tables:   []string{resolver.Table, store.Table, quarantine.Table, metrics.Table, web.Table},
		Resolver: resolver.FromConfig,
		Store:    store.FromConfig,
		Holder:   quarantineHolder,
	}
}

// quarantineHolder builds the quarantine of [quarantine] on the engine's store, with its purge timer; nil
// without the table (quarantine verdicts then use the MTA's hold queue only).
func quarantineHolder(e *policy.Env) (policy.Holder, error) {
	sec := e.Config.Section(quarantine.Table)
	if !sec.Present() {
		return nil, nil
	}
	cfg, err := quarantine.Decode(e.Config)
	if err != nil {
		return nil, err
	}
	q, err := quarantine.New(cfg, e.Store, e.Logger)
	if err != nil {
		return nil, sec.Locate(err)
	}
	q.SetReport(metrics.QuarantineSize)
	e.OnClose(q.StartPurger())
	return holder{q}, nil
}

// holder adapts the quarantine to policy's hold hook.
type holder struct{ q *quarantine.Quarantine }

func (h holder) Hold(ctx context.Context, req policy.HoldRequest) (policy.HoldResult, error) {
	rec := quarantine.Record{ID: req.Ref, Time: req.Time, QueueID: req.QueueID, ClientAddr: req.ClientAddr,
		ClientName: req.ClientName, Helo: req.Helo, Sender: req.Sender, Kind: quarantine.Kind(req.Kind),
		Reasons: req.Reasons, Score: req.Score}
	for _, r := range req.Recipients {
		rec.Recipients = append(rec.Recipients, quarantine.Recipient{Addr: r, State: quarantine.StateHeld})
	}
	for _, c := range req.Checks {
		rec.Checks = append(rec.Checks, quarantine.CheckResult{Check: c.Check, Stage: c.Stage, Verdict: c.Verdict,
			Reason: c.Reason, Score: c.Score})
	}
	for _, hd := range req.AddedHeaders {
		rec.AddedHeaders = append(rec.AddedHeaders, quarantine.Header{Name: hd.Name, Value: hd.Value})
	}
	if err := h.q.Keep(ctx, rec, req.Message); err != nil {
		return policy.HoldResult{}, err
	}
	return policy.HoldResult{Discard: h.q.Config().Mode == quarantine.ModeStore}, nil
}
