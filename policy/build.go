package policy

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/moatmail/moat/config"
)

// Version is moat's version, set at build time with -ldflags "-X github.com/moatmail/moat/policy.Version=…".
var Version = "0.1.0-dev"

// Settings is the [policy] table of the configuration file.
type Settings struct {
	// AuthservID names this host in Authentication-Results (RFC 8601 section 2.5); default: the host name.
	AuthservID string `toml:"authserv_id"`
	// DryRun puts every check in dry-run mode: findings are logged, nothing is rejected.
	DryRun bool `toml:"dry_run"`
	// TagScore, QuarantineScore and RejectScore are thresholds on the message's total spam score.
	TagScore        float64 `toml:"tag_score"`
	QuarantineScore float64 `toml:"quarantine_score"`
	RejectScore     float64 `toml:"reject_score"`
	// TraceHeader is the name of moat's trace header; "" turns it off.
	TraceHeader string `toml:"trace_header"`
	// StageTimeout bounds each envelope-stage check; MessageTimeout bounds the end-of-message work.
	StageTimeout   config.Duration `toml:"stage_timeout"`
	MessageTimeout config.Duration `toml:"message_timeout"`
}

// DefaultSettings are the [policy] defaults.
func DefaultSettings() Settings {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return Settings{
		AuthservID:     host,
		TagScore:       5,
		RejectScore:    0,
		TraceHeader:    "X-Moat",
		StageTimeout:   config.Duration(10 * time.Second),
		MessageTimeout: config.Duration(120 * time.Second),
	}
}

// spamHeaders are SpamAssassin's headers (X-Spam-Flag, -Score, -Level, -Status, -Report, -Checker-Version…):
// moat writes its own and never lets any through from outside, as Sieve rules and mail clients trust them.
var spamHeaders = []string{"X-Spam-*"}

type entry struct {
	check   Check
	name    string
	kind    Kind
	dryRun  bool
	timeout time.Duration
}

// Build builds an engine from a configuration file: it validates the top-level tables, the [policy] table and
// every [checks.NAME] table, and sets up the enabled checks in Order, handing them the services svc. It goes
// on after an invalid table, so that the error it returns lists every table's error (errors.Join), each
// naming file, line and key.
func Build(f *config.File, logger *slog.Logger, svc Services) (*Engine, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := checkOrder(); err != nil {
		return nil, err
	}
	var errs []error
	errs = append(errs, checkTopLevel(f, svc.knownTables()))
	st, err := loadSettings(f)
	errs = append(errs, err)
	checks := f.Section("checks")
	registered := Registered()
	for _, name := range checks.Keys() {
		if _, ok := lookupSetup(name); !ok {
			errs = append(errs, checks.Errorf(name, "unknown check (known: %s)", strings.Join(registered, ", ")))
		}
	}
	e := &Engine{
		Settings: st,
		params:   Params{DryRun: st.DryRun, TagScore: st.TagScore, QuarantineScore: st.QuarantineScore, RejectScore: st.RejectScore},
		env:      NewEnv(f, logger, svc),
		log:      logger,
	}
	for _, name := range Order {
		setup, ok := lookupSetup(name)
		sec := checks.Sub(name)
		if !ok || !sec.Present() {
			continue
		}
		en, err := e.setupCheck(name, sec, setup)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if en != nil {
			e.add(en)
		}
	}
	if svc.Holder != nil {
		h, err := svc.Holder(e.env)
		errs = append(errs, err)
		e.holder = h
	}
	if err := errors.Join(errs...); err != nil {
		e.close()
		return nil, err
	}
	e.owned = append(e.owned, spamHeaders...)
	if st.TraceHeader != "" {
		e.owned = append(e.owned, st.TraceHeader)
	}
	return e, nil
}

// checkTopLevel refuses a top-level table moat does not know (a typo would otherwise be ignored silently).
func checkTopLevel(f *config.File, known []string) error {
	var errs []error
	for _, k := range f.TopKeys() {
		if !contains(known, k) {
			errs = append(errs, &config.Error{File: f.Path, Line: f.LineOf(k), Key: k,
				Msg: fmt.Sprintf("unknown table (known: %s)", strings.Join(known, ", "))})
		}
	}
	return errors.Join(errs...)
}

// loadSettings decodes the [policy] table over the defaults and validates it.
func loadSettings(f *config.File) (Settings, error) {
	st := DefaultSettings()
	psec := f.Section("policy")
	if err := psec.Decode(&st); err != nil {
		return st, err
	}
	if st.AuthservID == "" || strings.ContainsAny(st.AuthservID, " ;\t\r\n") {
		return st, psec.Errorf("authserv_id", "must be a host name without spaces or ';'")
	}
	if st.TraceHeader != "" && !validHeaderName(st.TraceHeader) {
		return st, psec.Errorf("trace_header", "%q is not a valid header name", st.TraceHeader)
	}
	for key, v := range map[string]float64{"tag_score": st.TagScore, "quarantine_score": st.QuarantineScore, "reject_score": st.RejectScore} {
		if v < 0 {
			return st, psec.Errorf(key, "must not be negative (0 turns it off)")
		}
	}
	if st.RejectScore > 0 && st.QuarantineScore > st.RejectScore {
		return st, psec.Errorf("quarantine_score", "must not be above reject_score")
	}
	if st.RejectScore > 0 && st.TagScore > st.RejectScore {
		return st, psec.Errorf("tag_score", "must not be above reject_score")
	}
	if st.StageTimeout <= 0 {
		return st, psec.Errorf("stage_timeout", "must be positive")
	}
	if st.MessageTimeout <= 0 {
		return st, psec.Errorf("message_timeout", "must be positive")
	}
	return st, nil
}

// setupCheck reads the keys every check has (enabled, dry_run, timeout) from its [checks.NAME] table sec and
// hands the rest to the check's setup. It returns nil for a check that is turned off.
func (e *Engine) setupCheck(name string, sec *config.Section, setup SetupFunc) (*entry, error) {
	var generic struct {
		Enabled bool            `toml:"enabled"`
		DryRun  bool            `toml:"dry_run"`
		Timeout config.Duration `toml:"timeout"`
	}
	generic.Enabled = true
	if err := sec.Pick("enabled", "dry_run", "timeout").Decode(&generic); err != nil {
		return nil, err
	}
	if !generic.Enabled {
		return nil, nil
	}
	c, err := setup(sec.Without("enabled", "dry_run", "timeout"), e.env)
	if err != nil {
		return nil, err
	}
	return &entry{check: c, name: name, kind: c.Kind(), dryRun: generic.DryRun || e.Settings.DryRun, timeout: generic.Timeout.D()}, nil
}

// add puts a set-up check into the run order of each stage it takes part in.
func (e *Engine) add(en *entry) {
	e.entries = append(e.entries, en)
	for _, stage := range Stages(en.check) {
		e.byStage[stage] = append(e.byStage[stage], en)
	}
	if ho, ok := en.check.(HeaderOwner); ok {
		e.owned = append(e.owned, ho.OwnedHeaders()...)
	}
}

// Stages reports which stages some enabled check needs, so that the milter asks the MTA for no more.
func (e *Engine) Stages() map[Stage]bool {
	out := map[Stage]bool{}
	for st, list := range e.byStage {
		if len(list) > 0 {
			out[Stage(st)] = true
		}
	}
	return out
}

// NeedsBody reports whether some enabled check reads the message body: a body stream, a content scanner, or a
// message checker that is not HeaderOnly.
func (e *Engine) NeedsBody() bool {
	for _, en := range e.byStage[StageEOM] {
		switch c := en.check.(type) {
		case BodyStreamer, ContentScanner:
			return true
		case MessageChecker:
			if ho, ok := c.(HeaderOnly); !ok || !ho.HeaderOnly() {
				return true
			}
		}
	}
	return false
}

// BodyLimit returns how many body bytes the checks can use at most: past it, every check that reads bodies is
// a SizeLimited scanner that would skip the message anyway. -1 means no limit.
func (e *Engine) BodyLimit() int64 {
	limit := int64(0)
	for _, en := range e.byStage[StageEOM] {
		switch c := en.check.(type) {
		case BodyStreamer:
			return -1
		case MessageChecker:
			if ho, ok := c.(HeaderOnly); !ok || !ho.HeaderOnly() {
				return -1
			}
		case ContentScanner:
			sl, ok := c.(SizeLimited)
			if !ok {
				return -1
			}
			limit = max(limit, sl.MaxSize())
		}
	}
	return limit
}

// Checks lists the enabled checks in run order.
func (e *Engine) Checks() []string {
	out := make([]string, len(e.entries))
	for i, en := range e.entries {
		out[i] = en.name
	}
	return out
}
func validHeaderName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	i := sort.SearchStrings(list, s)
	return i < len(list) && list[i] == s
}
