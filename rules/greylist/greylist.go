// Package greylist implements greylisting: the first delivery attempt of an unknown (client network, sender,
// recipient) triplet gets a temporary failure at RCPT time, and a retry after the delay passes. Real MTAs
// retry (RFC 5321 section 4.5.4.1); most spam software does not. RFC 6647 describes the technique and its
// trade-offs.
//
// # Triplet
//
// The client part is the client's network (IPv4 /24 and IPv6 /64 by default) or, when SPF passed, the
// sender's domain ("spf:example.com"), so a provider retrying from another address of its pool passes on its
// first retry. The sender is normalised by [NormalizeSender] (BATV, SRS, VERP and +extensions removed; the
// null sender keyed on the HELO name). The recipient is the lower-cased address. Each recipient is decided
// on its own.
//
// # Timing
//
// A retry at least delay (5m) after the first attempt and within window (2d) passes and is recorded; a passed
// triplet is forgotten after expiry (35d) without traffic. A client key that passed auto_whitelist (5)
// triplets, counting at most one pass per auto_whitelist_interval (1h), is no longer greylisted until it is
// quiet for expiry. Both the network and the "spf:" key are checked and counted, so a network that earned
// its place is not greylisted again when its next sender passes SPF.
//
// # Skipped
//
// Authenticated clients, trusted networks (policy.FactTrustedNetwork), DNSWL hits (policy.FactDNSWL), local submissions
// (no client IP), recipients already refused by an earlier check, and messages an anti-spam check already
// rejects. White-listed senders are skipped by the engine (the check is of kind antispam). With
// suspicious_only, clients with forward-confirmed reverse DNS that also pass SPF are skipped. Every setting
// can be changed per recipient domain under [checks.greylist.domains."example.org"].
//
// # State
//
// Decisions go to the state store ([store]): SQLite by default, Redis to share greylisting between MX hosts.
// When the store fails, on_error decides: "accept" (default; the message goes through and the error is
// logged, since a tempfail storm would delay all mail) or "tempfail". After a failure the store is left
// alone for a few seconds (a circuit breaker), so a hung Redis does not hold up every RCPT.
//
// A message that passes after a delay gets "X-Greylist: delayed N seconds by moat-VERSION; DATE", after
// milter-greylist's header, once per message; never in dry run, where nothing was delayed. `moat scan`
// (Session.ReadOnly) computes the decision without changing the stored state.
package greylist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/store"
)

// Name is the check's name.
const Name = "greylist"

// HeaderName is the header added to messages that passed after a delay.
const HeaderName = "X-Greylist"

// Reasons, for logs and the trace header.
const (
	ReasonGreylisted    = "greylisted"
	ReasonPassed        = "passed"
	ReasonKnown         = "known"
	ReasonWhitelisted   = "auto-whitelisted"
	ReasonStoreError    = "store-error"
	ReasonAuthenticated = "authenticated"
	ReasonTrusted       = "trusted-network"
	ReasonDNSWL         = "dnswl"
	ReasonNotSuspicious = "not-suspicious"
	ReasonDomainOff     = "domain-off"
	ReasonLocal         = "local-submission"
	ReasonRefused       = "refused-anyway"
)

// StatusGreylisted is the status of a greylisted recipient.
const StatusGreylisted policy.Status = "greylisted"

// clock is the time source; tests replace it.
var clock = time.Now

func init() {
	policy.Register(Name, setup)
}

// Config is the [checks.greylist] table.
type Config struct {
	Delay                 config.Duration `toml:"delay"`
	Window                config.Duration `toml:"window"`
	Expiry                config.Duration `toml:"expiry"`
	IPv4Prefix            int             `toml:"ipv4_prefix"`
	IPv6Prefix            int             `toml:"ipv6_prefix"`
	GroupBySPF            bool            `toml:"group_by_spf_domain"`
	AutoWhitelist         int             `toml:"auto_whitelist"`
	AutoWhitelistInterval config.Duration `toml:"auto_whitelist_interval"`
	SuspiciousOnly        bool            `toml:"suspicious_only"`
	// Text is the reply text; "{seconds}" is replaced by the wait. The enhanced code 4.7.1 is added.
	Text    string `toml:"text"`
	OnError string `toml:"on_error"`
	Header  bool   `toml:"header"`
	// Domains overrides settings per recipient domain (and its subdomains).
	Domains map[string]DomainConfig `toml:"domains"`
}

// DomainConfig overrides settings for one recipient domain; unset keys keep the check's values.
type DomainConfig struct {
	Enabled        *bool            `toml:"enabled"`
	SuspiciousOnly *bool            `toml:"suspicious_only"`
	Delay          *config.Duration `toml:"delay"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Delay:                 config.Duration(5 * time.Minute),
		Window:                config.Duration(48 * time.Hour),
		Expiry:                config.Duration(35 * 24 * time.Hour),
		IPv4Prefix:            24,
		IPv6Prefix:            64,
		GroupBySPF:            true,
		AutoWhitelist:         5,
		AutoWhitelistInterval: config.Duration(time.Hour),
		Text:                  "Greylisted, please try again in {seconds} seconds",
		OnError:               "accept",
		Header:                true,
	}
}

// DecodeConfig reads and validates a [checks.greylist] table (without the engine's keys).
func DecodeConfig(sec *config.Section) (Config, error) {
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return cfg, err
	}
	switch {
	case cfg.Delay <= 0:
		return cfg, sec.Errorf("delay", "must be positive")
	case cfg.Window <= cfg.Delay:
		return cfg, sec.Errorf("window", "must be longer than delay (%v)", cfg.Delay)
	case cfg.Expiry <= 0:
		return cfg, sec.Errorf("expiry", "must be positive")
	case cfg.IPv4Prefix < 1 || cfg.IPv4Prefix > 32:
		return cfg, sec.Errorf("ipv4_prefix", "must be between 1 and 32")
	case cfg.IPv6Prefix < 1 || cfg.IPv6Prefix > 128:
		return cfg, sec.Errorf("ipv6_prefix", "must be between 1 and 128")
	case cfg.AutoWhitelist < 0:
		return cfg, sec.Errorf("auto_whitelist", "must not be negative (0 turns it off)")
	case cfg.AutoWhitelistInterval < 0:
		return cfg, sec.Errorf("auto_whitelist_interval", "must not be negative")
	case cfg.OnError != "accept" && cfg.OnError != "tempfail":
		return cfg, sec.Errorf("on_error", "must be \"accept\" or \"tempfail\", not %q", cfg.OnError)
	case cfg.Text == "" || strings.ContainsAny(cfg.Text, "\r\n"):
		return cfg, sec.Errorf("text", "must be one non-empty line")
	}
	// Keys in file order (then by name), so that two spellings of one domain are reported at the second.
	domains := sec.Sub("domains")
	keys := make([]string, 0, len(cfg.Domains))
	for d := range cfg.Domains {
		keys = append(keys, d)
	}
	lineOf := func(d string) int { return sec.File().LineOf(domains.Path() + "." + d) }
	sort.Slice(keys, func(i, j int) bool {
		if li, lj := lineOf(keys[i]), lineOf(keys[j]); li != lj {
			return li < lj
		}
		return keys[i] < keys[j]
	})
	norm := make(map[string]DomainConfig, len(cfg.Domains))
	spelled := map[string]string{}
	for _, d := range keys {
		dc := cfg.Domains[d]
		n, err := normalizeDomainKey(d)
		if err != nil {
			return cfg, domains.Errorf(d, "%v", err)
		}
		if prev, ok := spelled[n]; ok {
			return cfg, domains.Errorf(d, "same domain as %q", prev)
		}
		spelled[n] = d
		if dc.Delay != nil && (*dc.Delay <= 0 || *dc.Delay >= cfg.Window) {
			return cfg, domains.Sub(d).Errorf("delay", "must be positive and shorter than window (%v)", cfg.Window)
		}
		norm[n] = dc
	}
	if cfg.Domains != nil {
		cfg.Domains = norm
	}
	return cfg, nil
}

// normalizeDomainKey validates a key of [checks.greylist.domains] and returns it in the form recipient
// domains are compared in: lower-case ASCII (A-labels for internationalised names), no trailing dot. A key
// covers the domain and its subdomains, so wildcards are refused rather than silently never matching.
func normalizeDomainKey(d string) (string, error) {
	if strings.Contains(d, "*") {
		return "", fmt.Errorf("%q: wildcards are not supported (a domain covers its subdomains already)", d)
	}
	a, err := addr.DomainASCII(d)
	if err != nil || !validDomain(a) {
		return "", fmt.Errorf("%q is not a domain name", d)
	}
	return a, nil
}

// validDomain reports whether d is a host name (RFC 1123 section 2.1: letters, digits and hyphens, labels of
// 1 to 63 characters that do not start or end with a hyphen, 253 characters at most).
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// storeBackoff is how long the check leaves the store alone after it failed: while Redis hangs, each RCPT
// would otherwise wait redis_timeout, holding up every SMTP session.
const storeBackoff = 5 * time.Second

// errStoreBackoff is the error of a decision not asked of the store because it failed recently.
var errStoreBackoff = errors.New("greylist: store skipped after a recent failure")

// Check is the greylisting check.
type Check struct {
	cfg Config
	st  store.Store
	log *slog.Logger
	now func() time.Time

	mu        sync.Mutex
	downUntil time.Time // the store is not asked before this time (circuit breaker)
	down      bool      // the store failed and has not answered since (logged once)
}

func setup(sec *config.Section, env *policy.Env) (policy.Check, error) {
	cfg, err := DecodeConfig(sec)
	if err != nil {
		return nil, err
	}
	st, err := env.Store()
	if err != nil {
		return nil, err
	}
	return New(cfg, st, env.Logger, clock), nil
}

// New returns a check over a store; now is the clock (time.Now in production).
func New(cfg Config, st store.Store, log *slog.Logger, now func() time.Time) *Check {
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	norm := make(map[string]DomainConfig, len(cfg.Domains))
	for d, dc := range cfg.Domains {
		if n, err := normalizeDomainKey(d); err == nil {
			d = n
		}
		norm[addr.Domain(d)] = dc
	}
	cfg.Domains = norm
	return &Check{cfg: cfg, st: st, log: log, now: now}
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// Kind implements policy.Check: white-listed senders are not greylisted.
func (c *Check) Kind() policy.Kind { return policy.KindAntispam }

// OwnedHeaders implements policy.HeaderOwner: incoming X-Greylist headers are removed.
func (c *Check) OwnedHeaders() []string { return []string{HeaderName} }

// params returns the store parameters with the delay of the recipient domain.
func (c *Check) params(delay time.Duration) store.GreyParams {
	return store.GreyParams{Delay: delay, Window: c.cfg.Window.D(), Expiry: c.cfg.Expiry.D(),
		AutoWhitelist: c.cfg.AutoWhitelist, AutoWhitelistInterval: c.cfg.AutoWhitelistInterval.D()}
}

// domain returns the effective settings for a recipient domain: the closest configured parent wins.
func (c *Check) domain(d string) (enabled, suspiciousOnly bool, delay time.Duration) {
	enabled, suspiciousOnly, delay = true, c.cfg.SuspiciousOnly, c.cfg.Delay.D()
	d = addr.Domain(d)
	for d != "" {
		if dc, ok := c.cfg.Domains[d]; ok {
			if dc.Enabled != nil {
				enabled = *dc.Enabled
			}
			if dc.SuspiciousOnly != nil {
				suspiciousOnly = *dc.SuspiciousOnly
			}
			if dc.Delay != nil {
				delay = dc.Delay.D()
			}
			return
		}
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		d = d[i+1:]
	}
	return
}

func skipped(reason string) []policy.Finding {
	return []policy.Finding{{Status: policy.StatusSkipped, Reason: reason}}
}

// Rcpt implements policy.RcptChecker: one decision per recipient.
func (c *Check) Rcpt(ctx context.Context, s *policy.Session, r *policy.Recipient) []policy.Finding {
	switch {
	case s.Auth.Authenticated():
		return skipped(ReasonAuthenticated)
	case s.Get(policy.FactTrustedNetwork) == "yes":
		return skipped(ReasonTrusted)
	case s.Get(policy.FactDNSWL) == "yes":
		return skipped(ReasonDNSWL)
	case !s.ClientIP.IsValid():
		return skipped(ReasonLocal)
	case r.Refused(s):
		// Do not record triplets for recipients that are refused anyway (a dictionary attack would fill
		// the store).
		return skipped(ReasonRefused)
	}
	enabled, suspiciousOnly, delay := c.domain(r.Addr.Domain)
	if !enabled {
		return skipped(ReasonDomainOff)
	}
	spfPass := s.Get(policy.FactSPFResult) == "pass"
	if suspiciousOnly && spfPass && s.Get(policy.FactFCrDNS) == "pass" {
		return skipped(ReasonNotSuspicious)
	}
	spfDomain := ""
	if c.cfg.GroupBySPF && spfPass {
		spfDomain = s.Get(policy.FactSPFDomain)
	}
	req := store.GreyRequest{
		Triplet: store.Triplet{
			Client: ClientKey(s.ClientIP, c.cfg.IPv4Prefix, c.cfg.IPv6Prefix, spfDomain),
			Sender: NormalizeSender(s.From, s.Helo),
			Rcpt:   strings.ToLower(r.Addr.String()),
		},
		// Auto-whitelisting also looks at the network when the client key is the SPF domain, so a network
		// that earned its place stays white-listed when a new sender of it passes SPF.
		Network:  ClientKey(s.ClientIP, c.cfg.IPv4Prefix, c.cfg.IPv6Prefix, ""),
		IP:       s.ClientIP.String(),
		Helo:     cleanHelo(s.Helo),
		Now:      c.now(),
		Params:   c.params(delay),
		ReadOnly: s.ReadOnly,
	}
	res, err := c.decide(ctx, req)
	detail := fmt.Sprintf("client=%s sender=%s rcpt=%s id=%s", req.Client, req.Sender, req.Rcpt, req.ID())
	if req.ReadOnly {
		detail += " read-only"
	}
	if err != nil {
		if c.cfg.OnError == "tempfail" {
			f := policy.Tempfailf(policy.StatusTempError, ReasonStoreError, 451, "4.3.0",
				"Temporary local problem, please try again later")
			f.Err, f.Detail = err, detail
			return []policy.Finding{f}
		}
		return []policy.Finding{{Status: policy.StatusTempError, Reason: ReasonStoreError, Err: err,
			Detail: detail + " (accepted: on_error = accept)"}}
	}
	detail += " outcome=" + string(res.Outcome)
	switch res.Outcome {
	case store.GreyNew, store.GreyEarly:
		secs := int(math.Ceil(res.Wait.Seconds()))
		if secs < 1 {
			secs = 1
		}
		// 451 asks the client to retry (RFC 5321 section 4.2.1: 4yz transient negative completion); 4.7.1 is
		// "delivery not authorized, message refused", a policy status (RFC 3463 section 3.8).
		f := policy.Finding{Status: StatusGreylisted, Verdict: policy.Tempfail, Reason: ReasonGreylisted,
			Detail: fmt.Sprintf("%s attempts=%d wait=%ds", detail, res.Entry.Attempts, secs),
			Reply: policy.Reply{Code: 451, Enhanced: "4.7.1",
				Text: strings.ReplaceAll(c.cfg.Text, "{seconds}", strconv.Itoa(secs))}}
		return []policy.Finding{f}
	case store.GreyFirstPass:
		f := policy.Finding{Status: policy.StatusPass, Reason: ReasonPassed,
			Detail: fmt.Sprintf("%s delayed=%ds", detail, int(res.Delayed.Seconds()))}
		switch {
		case policy.InDryRun(ctx):
			// In dry run nothing was held up: the first attempt was let through, and this "retry" is just a
			// later message of the triplet. A header claiming a delay would be false.
			f.Detail += " dry-run: no " + HeaderName
		case c.cfg.Header && !headerAdded(s, r):
			f.AddHeaders = []policy.Header{{Name: HeaderName, Value: HeaderValue(res.Delayed, req.Now)}}
		}
		return []policy.Finding{f}
	case store.GreyWhitelisted:
		return []policy.Finding{{Status: policy.StatusPass, Reason: ReasonWhitelisted,
			Detail: fmt.Sprintf("%s client-passes=%d", detail, res.ClientCount)}}
	default:
		return []policy.Finding{{Status: policy.StatusPass, Reason: ReasonKnown, Detail: detail}}
	}
}

// decide asks the store for a decision, through a circuit breaker: after a failure the store is left alone
// for storeBackoff (the error is logged once, and once more when the store answers again), so that a hung
// Redis costs one redis_timeout every few seconds instead of one per recipient.
func (c *Check) decide(ctx context.Context, req store.GreyRequest) (store.GreyResult, error) {
	c.mu.Lock()
	until := c.downUntil
	c.mu.Unlock()
	if req.Now.Before(until) {
		return store.GreyResult{}, fmt.Errorf("%w (until %s)", errStoreBackoff, until.UTC().Format(time.RFC3339))
	}
	res, err := c.st.Greylist(ctx, req)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		if c.down {
			c.down = false
			c.log.Info("greylist: the store answers again")
		}
	case ctx.Err() != nil:
		// The session went away (client disconnected, milter timeout): not the store's fault.
	default:
		c.downUntil = req.Now.Add(storeBackoff)
		if !c.down {
			c.down = true
			c.log.Warn("greylist: the store failed; not asking it again for a while, on_error applies meanwhile",
				"backoff", storeBackoff, "on_error", c.cfg.OnError, "err", err)
		}
	}
	return res, err
}

// HeaderValue is the value of X-Greylist (with its leading space), after milter-greylist's
// "Delayed for … by milter-greylist-VERSION; DATE"; the date is RFC 5322 section 3.3 date-time.
func HeaderValue(delayed time.Duration, now time.Time) string {
	return fmt.Sprintf(" delayed %d seconds by moat-%s; %s", int(delayed.Seconds()), policy.Version,
		now.Format(time.RFC1123Z))
}

// headerAdded reports whether an accepted earlier recipient of this message already carries our header.
func headerAdded(s *policy.Session, r *policy.Recipient) bool {
	for _, o := range s.Rcpts {
		if o == r {
			break
		}
		if !o.Accepted() {
			continue
		}
		for _, f := range o.Findings {
			if f.Check == Name && len(f.AddHeaders) > 0 {
				return true
			}
		}
	}
	return false
}
