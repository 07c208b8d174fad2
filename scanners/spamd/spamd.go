// Package spamd implements the "spamd" check: it has SpamAssassin's spamd score every message at end of
// message, over the SPAMC protocol, and hands the score to moat's policy step; and it implements learning
// (TELL) for `moat learn`.
//
// # Protocol
//
// SPAMC/1.5 (spamd/PROTOCOL in SpamAssassin's source): a request line "SYMBOLS SPAMC/1.5", headers
// ("Content-length" spelled exactly so, with the exact byte count; "User" when configured; "Compress: zlib"
// when compression is on), an empty line, and the whole message. The reply "SPAMD/1.1 0 EX_OK" carries
// "Spam: True ; 6.1 / 5.0" and the names of the rules that hit. Every reply is validated: status line,
// header syntax, numbers, Content-length against the body, rule names. TELL (with "Message-class",
// "Set: local" or "Remove: local") teaches spamd's Bayes database; spamd must run with --allow-tell.
//
// # Scores and thresholds
//
// moat, not spamd, decides. The finding carries spamd's score (Score, Scored) and rule names (Tests); the
// policy step adds it to the other anti-spam scores and applies [policy] tag_score (X-Spam-Flag: YES),
// quarantine_score and reject_score ("550 5.7.1 Message considered spam (score S) (ref=…)"), and writes
// SpamAssassin's headers X-Spam-Flag, X-Spam-Score, X-Spam-Level and X-Spam-Status after removing any that
// came from outside. spamd's own required_score is only logged.
//
// # When spamd is not asked
//
// White-listed mail (the engine skips anti-spam checks), mail from authenticated clients (skip_authenticated,
// default true), mail that an earlier check already rejects, and messages above max_size (default 500K, as
// spamc): the last gets "X-Spam-Status: unscanned (too large)".
//
// # Failure
//
// With several servers, a request fails over when a server cannot be reached, is silent past its share of
// the timeout (attempt_timeout), or answers EX_UNAVAILABLE, EX_SOFTWARE, EX_OSERR, EX_IOERR, EX_TEMPFAIL or
// EX_TIMEOUT. spamd unreachable, silent past the check's timeout, or answering an error or a malformed reply:
// on_failure = "accept" (default; "X-Spam-Status: unscanned (reason)", since a tempfail storm hurts more than
// one unscored message) or "tempfail" ("451 4.7.1"). When another check scored the message, the policy step
// writes X-Spam-Status itself; then the failure shows as the test SPAMD_UNSCANNED in its tests= list rather
// than as a second X-Spam-Status.
package spamd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/scanners/servers"
	"github.com/moatmail/moat/scanners/spamc"
)

// Name is the check's registered name.
const Name = "spamd"

// Reasons and statuses of the findings.
const (
	ReasonScored    = "scored"
	ReasonTooLarge  = "too-large"
	ReasonFailure   = "scan-failed"
	ReasonSkipped   = "skipped"
	StatusSpam      = policy.Status("spam")
	StatusHam       = policy.Status("ham")
	TestUnscanned   = "SPAMD_UNSCANNED"
	statusHeader    = "X-Spam-Status"
	defaultMaxSize  = 500 << 10 // spamc's default
	defaultConnect  = 2 * time.Second
	defaultRetry    = 10 * time.Second
	headerUnscanned = " unscanned"
)

func init() { policy.Register(Name, setup) }

// Config is the [checks.spamd] table.
type Config struct {
	// Servers are spamd addresses: "tcp:127.0.0.1:783", "unix:/run/spamd.sock". Required.
	Servers []string `toml:"servers"`
	// MaxSize: larger messages are not scored ("500K", the default, as spamc).
	MaxSize config.Size `toml:"max_size"`
	// User is sent as the "User" header (spamd's per-user configuration and Bayes); "" sends none.
	User string `toml:"user"`
	// UserPerDomain sends the recipients' domain as User when all accepted recipients share one domain
	// (otherwise User).
	UserPerDomain bool `toml:"user_per_domain"`
	// Compress sends messages zlib-compressed to servers that support it (spamd with Compress::Zlib).
	Compress bool `toml:"compress"`
	// SkipAuthenticated skips mail from SMTP-authenticated clients (default true).
	SkipAuthenticated bool `toml:"skip_authenticated"`
	// OnFailure is "accept" (default: fail open with X-Spam-Status: unscanned) or "tempfail".
	OnFailure string `toml:"on_failure"`
	// ConnectTimeout bounds each connection attempt (default 2s).
	ConnectTimeout config.Duration `toml:"connect_timeout"`
	// AttemptTimeout bounds one request on one server before the next is tried (default: with several
	// servers, the time left of the check's timeout shared equally among the servers left to try).
	AttemptTimeout config.Duration `toml:"attempt_timeout"`
	// RetryAfter is how long a failed server is skipped (default 10s).
	RetryAfter config.Duration `toml:"retry_after"`
}

// DefaultConfig returns the defaults of [checks.spamd].
func DefaultConfig() Config {
	return Config{
		MaxSize:           defaultMaxSize,
		SkipAuthenticated: true,
		OnFailure:         "accept",
		ConnectTimeout:    config.Duration(defaultConnect),
		RetryAfter:        config.Duration(defaultRetry),
	}
}

// Check is the configured spamd check.
type Check struct {
	cfg      Config
	client   *spamc.Client
	maxSize  int64
	failOpen bool
}

func setup(sec *config.Section, _ *policy.Env) (policy.Check, error) {
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(sec, cfg)
}

// New builds the check from a decoded configuration; sec locates errors (nil in tests).
func New(sec *config.Section, cfg Config) (*Check, error) {
	client, err := newClient(sec, cfg)
	if err != nil {
		return nil, err
	}
	c := &Check{cfg: cfg, client: client, maxSize: int64(cfg.MaxSize)}
	switch cfg.OnFailure {
	case "accept":
		c.failOpen = true
	case "tempfail":
	default:
		return nil, errorf(sec, "on_failure", "want \"accept\" or \"tempfail\", got %q", cfg.OnFailure)
	}
	if c.maxSize <= 0 {
		return nil, errorf(sec, "max_size", "must be positive")
	}
	return c, nil
}

func errorf(sec *config.Section, key, format string, args ...any) error {
	if sec == nil {
		return fmt.Errorf("spamd: %s: %s", key, fmt.Sprintf(format, args...))
	}
	return sec.Errorf(key, format, args...)
}

func newClient(sec *config.Section, cfg Config) (*spamc.Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, errorf(sec, "servers", "at least one spamd server is required (e.g. \"tcp:127.0.0.1:783\")")
	}
	var list []servers.Server
	for i, s := range cfg.Servers {
		srv, err := servers.Parse(s)
		if err != nil {
			return nil, errorf(sec, fmt.Sprintf("servers[%d]", i), "%v", err)
		}
		if sec != nil && srv.Network == "unix" {
			srv.Addr = sec.File().Abs(srv.Addr) // relative to the configuration file
		}
		list = append(list, srv)
	}
	if cfg.ConnectTimeout <= 0 {
		return nil, errorf(sec, "connect_timeout", "must be positive")
	}
	if !validUser(cfg.User) {
		return nil, errorf(sec, "user", "must be printable ASCII without spaces")
	}
	return spamc.NewClient(list, spamc.ClientOptions{
		ConnectTimeout: cfg.ConnectTimeout.D(),
		AttemptTimeout: cfg.AttemptTimeout.D(),
		RetryAfter:     cfg.RetryAfter.D(),
		Compress:       cfg.Compress,
	}), nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// MaxSize is the largest message the check scans; the milter may stop the body of a larger one early.
func (c *Check) MaxSize() int64 { return c.maxSize }

// Kind implements policy.Check: white-listed mail is not scored.
func (c *Check) Kind() policy.Kind { return policy.KindAntispam }

// Client returns the check's spamd client.
func (c *Check) Client() *spamc.Client { return c.client }

// Scan implements policy.ContentScanner.
func (c *Check) Scan(ctx context.Context, s *policy.Session, m policy.Message) []policy.Finding {
	if c.cfg.SkipAuthenticated && s.Auth.Authenticated() {
		return []policy.Finding{{Status: policy.StatusSkipped, Reason: ReasonSkipped, Detail: "authenticated sender"}}
	}
	for _, f := range s.Findings() {
		if f.Verdict == policy.Reject && !f.DryRun {
			return []policy.Finding{{Status: policy.StatusSkipped, Reason: ReasonSkipped,
				Detail: "already rejected by " + f.Check}}
		}
	}
	size := m.Size()
	if size > c.maxSize {
		return []policy.Finding{c.unscanned(s, policy.Finding{Status: policy.StatusSkipped, Reason: ReasonTooLarge,
			Detail: fmt.Sprintf("message of %d bytes is above max_size %d: not scored", size, c.maxSize)}, "too large")}
	}
	user := c.userFor(s)
	start := time.Now()
	res, err := c.client.Check(ctx, spamc.CmdSymbols, user, spamc.Body{Open: m.Open, Size: size})
	if err != nil {
		return []policy.Finding{c.failure(s, err, time.Since(start))}
	}
	status := StatusHam
	if res.Spam {
		status = StatusSpam
	}
	return []policy.Finding{{
		Status: status, Reason: ReasonScored,
		Score: res.Score, Scored: true, Tests: res.Symbols,
		Detail: fmt.Sprintf("spamd score %.1f (spamd's required %.1f, user %q, %s)", res.Score, res.Threshold, user, res.Server),
	}}
}

// userFor picks the User header: the recipients' common domain with user_per_domain, else the fixed user.
func (c *Check) userFor(s *policy.Session) string {
	if !c.cfg.UserPerDomain {
		return c.cfg.User
	}
	domain := ""
	for _, r := range s.AcceptedRcpts() {
		d := r.Addr.Domain
		if d == "" || (domain != "" && d != domain) {
			return c.cfg.User
		}
		domain = d
	}
	if domain == "" || strings.ContainsAny(domain, " \t\r\n") {
		return c.cfg.User
	}
	return domain
}

// unscanned marks f as "not scored": a header of its own when no other check scored the message, else a test
// name in the policy step's X-Spam-Status (so that there is only one).
func (c *Check) unscanned(s *policy.Session, f policy.Finding, why string) policy.Finding {
	for _, o := range s.Findings() {
		if o.Scored {
			f.Tests = []string{TestUnscanned}
			return f
		}
	}
	f.AddHeaders = []policy.Header{{Name: statusHeader, Value: headerUnscanned + " (" + why + ")"}}
	return f
}

func (c *Check) failure(s *policy.Session, err error, elapsed time.Duration) policy.Finding {
	why := "spamd unavailable"
	switch {
	case errors.Is(err, spamc.ErrSpamd):
		why = "spamd error"
	case errors.Is(err, context.DeadlineExceeded):
		why = "spamd timeout"
	case errors.Is(err, spamc.ErrProtocol):
		why = "spamd protocol error"
	}
	f := policy.Finding{Status: policy.StatusTempError, Reason: ReasonFailure, Err: err,
		Detail: fmt.Sprintf("%s after %v", why, elapsed.Round(time.Millisecond))}
	if c.failOpen {
		return c.unscanned(s, f, why)
	}
	f.Verdict = policy.Tempfail
	f.Reply = policy.Reply{Code: 451, Enhanced: "4.7.1", Text: "Spam scan unavailable, please try again later"}
	return f
}
