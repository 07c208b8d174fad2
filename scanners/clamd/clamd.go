// Package clamd implements the "clamd" check: it scans every message at end of message with ClamAV's clamd
// daemon, over a unix socket or TCP, and rejects (or quarantines, or discards) infected mail.
//
// # Protocol
//
// The client speaks clamd's INSTREAM command (clamd(8), "INSTREAM"): "zINSTREAM\0", then the message in
// chunks, each preceded by its length as a 4-byte big-endian number, then a zero-length chunk; clamd answers
// "stream: OK\0", "stream: NAME FOUND\0" or "... ERROR\0". The whole message (header and body) is sent, since
// clamd decodes MIME itself. The message streams from the spool in 64 KiB chunks, so a scan holds no more
// than that in memory whatever the message size. The context given by the engine (the check's timeout)
// bounds the whole scan: connecting, sending and waiting for the verdict.
//
// # Servers
//
// Several servers can be configured; a scan goes to a healthy one and fails over to the next when a server
// cannot be reached or does not answer in attempt_timeout (by default its share of the time left). Servers that failed are pinged (zPING) every
// health_interval and come back when they answer PONG.
//
// # Decisions
//
// Infected: reject with "554 5.7.1 Virus found: NAME" (on_virus = "reject", the default), or quarantine, or
// discard; the signature name is logged in the finding's detail. clamd unreachable, silent past the
// deadline, or answering an error: on_failure = "tempfail" (default, fail closed: "451 4.7.1") or "accept"
// (fail open, with "X-Virus-Scanned: unscanned"). Messages above max_size are not sent (clamd would refuse
// them past its StreamMaxLength) and get "X-Virus-Scanned: moat (clamd) skipped: too large"; so do messages
// that clamd refuses with "INSTREAM size limit exceeded" (max_size set above StreamMaxLength), with a
// warning in the log: a retry would be refused the same, so a tempfail would only delay the message until
// the sender gives up. White-listed
// senders are still scanned: this is a KindVirus check. No bounce or notice ever goes to the sender.
package clamd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/scanners/servers"
)

// Name is the check's registered name.
const Name = "clamd"

// HeaderName is the header this check writes (and owns: incoming copies are removed).
const HeaderName = "X-Virus-Scanned"

// Reasons of the findings.
const (
	ReasonVirus     = "virus"
	ReasonFailure   = "scan-failed"
	ReasonTooLarge  = "too-large"
	ReasonClean     = "clean"
	StatusFound     = policy.Status("found")
	StatusClean     = policy.Status("clean")
	defaultMaxSize  = 25 << 20 // clamd's default StreamMaxLength
	defaultConnect  = 2 * time.Second
	defaultHealth   = 10 * time.Second
	headerScanned   = " moat (clamd)"
	headerUnscanned = " unscanned"
)

func init() { policy.Register(Name, setup) }

// Config is the [checks.clamd] table.
type Config struct {
	// Servers are clamd addresses: "unix:/run/clamav/clamd.ctl", "tcp:127.0.0.1:3310". Required.
	Servers []string `toml:"servers"`
	// MaxSize skips messages above this size ("25M", "500K", bytes without a unit). Keep it at or below clamd's
	// StreamMaxLength. Default 25M.
	MaxSize config.Size `toml:"max_size"`
	// OnVirus is "reject" (default), "quarantine" or "discard".
	OnVirus string `toml:"on_virus"`
	// OnFailure is "tempfail" (default: fail closed) or "accept" (fail open).
	OnFailure string `toml:"on_failure"`
	// ConnectTimeout bounds each connection attempt (default 2s).
	ConnectTimeout config.Duration `toml:"connect_timeout"`
	// AttemptTimeout bounds one scan on one server before the next is tried (default: with several
	// servers, the time left of the check's timeout shared equally among the servers left to try).
	AttemptTimeout config.Duration `toml:"attempt_timeout"`
	// HealthInterval is how often servers marked down are pinged (default 10s).
	HealthInterval config.Duration `toml:"health_interval"`
}

// Check is the configured clamd check.
type Check struct {
	cfg       Config
	pool      *Pool
	onVirus   policy.Verdict
	failOpen  bool
	maxSize   int64
	servers   []servers.Server
	closePool func() error
	log       *slog.Logger
}

func setup(sec *config.Section, env *policy.Env) (policy.Check, error) {
	cfg := Config{
		MaxSize:        defaultMaxSize,
		OnVirus:        "reject",
		OnFailure:      "tempfail",
		ConnectTimeout: config.Duration(defaultConnect),
		HealthInterval: config.Duration(defaultHealth),
	}
	if err := sec.Decode(&cfg); err != nil {
		return nil, err
	}
	c, err := New(sec, cfg)
	if err != nil {
		return nil, err
	}
	if env != nil && env.Logger != nil {
		c.log = env.Logger
	}
	return c, nil
}

// New builds the check from a decoded configuration; sec locates errors (it may be nil in tests).
func New(sec *config.Section, cfg Config) (*Check, error) {
	errorf := func(key, format string, args ...any) error {
		if sec == nil {
			return fmt.Errorf("clamd: %s: %s", key, fmt.Sprintf(format, args...))
		}
		return sec.Errorf(key, format, args...)
	}
	c := &Check{cfg: cfg, maxSize: int64(cfg.MaxSize), log: slog.Default()}
	if len(cfg.Servers) == 0 {
		return nil, errorf("servers", "at least one clamd server is required (e.g. \"unix:/run/clamav/clamd.ctl\")")
	}
	for i, s := range cfg.Servers {
		srv, err := servers.Parse(s)
		if err != nil {
			return nil, errorf(fmt.Sprintf("servers[%d]", i), "%v", err)
		}
		if sec != nil && srv.Network == "unix" {
			srv.Addr = sec.File().Abs(srv.Addr) // relative to the configuration file
		}
		c.servers = append(c.servers, srv)
	}
	switch cfg.OnVirus {
	case "reject":
		c.onVirus = policy.Reject
	case "quarantine":
		c.onVirus = policy.Quarantine
	case "discard":
		c.onVirus = policy.Discard
	default:
		return nil, errorf("on_virus", "want \"reject\", \"quarantine\" or \"discard\", got %q", cfg.OnVirus)
	}
	switch cfg.OnFailure {
	case "tempfail":
	case "accept":
		c.failOpen = true
	default:
		return nil, errorf("on_failure", "want \"tempfail\" or \"accept\", got %q", cfg.OnFailure)
	}
	if c.maxSize <= 0 {
		return nil, errorf("max_size", "must be positive")
	}
	if cfg.ConnectTimeout <= 0 {
		return nil, errorf("connect_timeout", "must be positive")
	}
	c.pool = NewPool(c.servers, PoolOptions{
		ConnectTimeout: cfg.ConnectTimeout.D(),
		AttemptTimeout: cfg.AttemptTimeout.D(),
		HealthInterval: cfg.HealthInterval.D(),
	})
	return c, nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// MaxSize is the largest message the check scans; the milter may stop the body of a larger one early.
func (c *Check) MaxSize() int64 { return c.maxSize }

// Kind implements policy.Check: virus scanning is never skipped for white-listed senders.
func (c *Check) Kind() policy.Kind { return policy.KindVirus }

// OwnedHeaders implements policy.HeaderOwner: a sender cannot pre-set X-Virus-Scanned.
func (c *Check) OwnedHeaders() []string { return []string{HeaderName} }

// Close stops the pool's health checks.
func (c *Check) Close() error { return c.pool.Close() }

// Pool returns the check's server pool (for tests and status output).
func (c *Check) Pool() *Pool { return c.pool }

// Scan implements policy.ContentScanner.
func (c *Check) Scan(ctx context.Context, s *policy.Session, m policy.Message) []policy.Finding {
	size := m.Size()
	if size > c.maxSize {
		return []policy.Finding{{
			Status: policy.StatusSkipped, Reason: ReasonTooLarge,
			Detail:     fmt.Sprintf("message of %d bytes is above max_size %d: not scanned", size, c.maxSize),
			AddHeaders: []policy.Header{{Name: HeaderName, Value: headerScanned + " skipped: too large"}},
		}}
	}
	start := time.Now()
	res, srv, err := c.pool.Scan(ctx, m.Open)
	if errors.Is(err, ErrSizeLimit) {
		// clamd's StreamMaxLength is below max_size: every retry would be refused the same, so a tempfail
		// would hold the message until the sender gives up. Treat it as too large, and tell the admin.
		c.log.Warn("clamd: message refused as above clamd's StreamMaxLength, accepted unscanned; "+
			"set max_size at or below StreamMaxLength (clamd.conf)",
			"server", srv.String(), "size", size, "max_size", c.maxSize, "err", err)
		return []policy.Finding{{
			Status: policy.StatusSkipped, Reason: ReasonTooLarge, Err: err, // clamd's words in the summary line
			Detail: fmt.Sprintf("message of %d bytes is above clamd's StreamMaxLength (%s), below max_size %d: not scanned",
				size, srv, c.maxSize),
			AddHeaders: []policy.Header{{Name: HeaderName, Value: headerScanned + " skipped: too large"}},
		}}
	}
	if err != nil {
		return []policy.Finding{c.failure(err, time.Since(start))}
	}
	if !res.Infected {
		return []policy.Finding{{
			Status: StatusClean, Reason: ReasonClean,
			Detail:     fmt.Sprintf("clean (%s, %d bytes)", srv, size),
			AddHeaders: []policy.Header{{Name: HeaderName, Value: headerScanned}},
		}}
	}
	name := servers.Printable(res.Virus)
	f := policy.Finding{
		Status: StatusFound, Verdict: c.onVirus, Reason: ReasonVirus,
		Detail: fmt.Sprintf("virus found: %s (%s)", name, srv),
		Tests:  []string{"CLAMD_VIRUS"},
	}
	if c.onVirus == policy.Reject {
		// RFC 3463 section 3.8: X.7.1 "delivery not authorized, message refused".
		f.Reply = policy.Reply{Code: 554, Enhanced: "5.7.1", Text: "Virus found: " + name}
	} else {
		f.AddHeaders = []policy.Header{{Name: HeaderName, Value: headerScanned + " infected: " + name}}
	}
	return []policy.Finding{f}
}

// failure applies on_failure to a scan that did not complete.
func (c *Check) failure(err error, elapsed time.Duration) policy.Finding {
	reason := "clamd unavailable"
	switch {
	case errors.Is(err, ErrClamd):
		reason = "clamd error"
	case errors.Is(err, context.DeadlineExceeded):
		reason = "clamd timeout"
	case errors.Is(err, ErrProtocol):
		reason = "clamd protocol error"
	}
	f := policy.Finding{
		Status: policy.StatusTempError, Reason: ReasonFailure, Err: err,
		Detail: fmt.Sprintf("%s after %v", reason, elapsed.Round(time.Millisecond)),
	}
	if c.failOpen {
		f.AddHeaders = []policy.Header{{Name: HeaderName, Value: headerUnscanned + " (" + reason + ")"}}
		return f
	}
	f.Verdict = policy.Tempfail
	f.Reply = policy.Reply{Code: 451, Enhanced: "4.7.1", Text: "Virus scan unavailable, please try again later"}
	return f
}
