// Package audit implements `moat audit`: it checks a mail domain and its MTA against moat's security
// checklist and says, for each point, PASS, WARN or FAIL with a one-line fix.
//
// The run has five steps, each in its own file:
//
//   - dns.go: MX (or null MX), the MX hosts' addresses, forward-confirmed PTR names that match the name the
//     MTA announces, DNSSEC (the AD bit of the resolver's answer);
//   - mailauth.go: SPF (one record, syntax, lookup and void-lookup limits, -all or ~all, the MX addresses
//     pass), DKIM (each [checks.dkimsign] key published and matching), DMARC (record, policy, rua, external
//     destinations authorised), MTA-STS (TXT record and HTTPS policy) and TLS-RPT;
//   - smtp.go: each MX over SMTP: banner, STARTTLS, TLS version and certificate, the relay battery of
//     rules/relay/relaytest (every attempt stops at the RCPT reply, then RSET; never DATA), VRFY and EXPN;
//   - mta.go: the local MTA's configuration: Postfix through postconf, or Sendmail's sendmail.cf;
//   - moatconf.go: moat's own configuration against the twelve checklist points.
//
// Every network step has its own timeout (Options.StepTimeout) and the whole run is bounded by the
// context's deadline. The audit only reads: it sends no mail and changes no configuration.
package audit

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
)

// ErrUsage says the options cannot be audited (no mail domain, bad flags); the CLI exits 2 on it.
var ErrUsage = errors.New("audit: bad usage")

// Options are what the audit cannot guess.
type Options struct {
	// Domain is the mail domain audited.
	Domain string
	// Config is moat's configuration; nil skips the moat step and the DKIM keys.
	Config *config.File
	// ConfigErr is what validating Config (policy.Build) said; the moat step reports it as a FAIL.
	ConfigErr error
	// MilterListen are moat's [milter] listen sockets ("unix:/abs/path", "tcp:host:port"), which the MTA step
	// looks for in the MTA's milter settings; empty: any milter whose name or socket says moat.
	MilterListen []string
	// DNSServers are host:port of the resolvers to ask; empty: the [dns] table of Config, else /etc/resolv.conf.
	DNSServers []string
	// SMTPPort is the port of each MX (25).
	SMTPPort int
	// Connect, when set (HOST:PORT), is dialled for every MX instead of the MX's own address.
	Connect string
	// HeloName is the name the audit's SMTP client announces.
	HeloName string
	// RootCAs verify the MX and MTA-STS certificates; nil: the system's.
	RootCAs *x509.CertPool
	// MTASTSURL replaces https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
	MTASTSURL string
	// SkipSMTP leaves out the SMTP step (no connection to the MX hosts).
	SkipSMTP bool
	// PostconfDir is Postfix's config_directory; SendmailCF the path of sendmail.cf. With neither, the
	// audit looks for /etc/postfix/main.cf then /etc/mail/sendmail.cf. SkipMTA leaves the step out.
	PostconfDir string
	SendmailCF  string
	SkipMTA     bool
	// Postconf is the postconf binary ("postconf": found in PATH or /usr/sbin).
	Postconf string
	// StepTimeout bounds each network step (one DNS query, one SMTP reply, one HTTPS fetch).
	StepTimeout time.Duration
}

// Run audits and returns the report; an error means the audit could not run at all (bad options).
// ctx's deadline bounds the whole run.
func Run(ctx context.Context, opts Options) (*Report, error) {
	domain, err := addr.DomainASCII(opts.Domain)
	if err != nil || !isHostName(domain) {
		return nil, fmt.Errorf("%w: %q is not a mail domain", ErrUsage, opts.Domain)
	}
	if opts.StepTimeout <= 0 {
		opts.StepTimeout = 10 * time.Second
	}
	if opts.SMTPPort == 0 {
		opts.SMTPPort = 25
	}
	if opts.HeloName == "" {
		opts.HeloName = "moat-audit.invalid"
	}
	servers := opts.DNSServers
	if len(servers) == 0 && opts.Config != nil {
		var dc struct {
			Servers []string `toml:"servers"`
		}
		if err := opts.Config.Section("dns").Pick("servers").Decode(&dc); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUsage, err)
		}
		servers = dc.Servers
	}
	cfg := resolver.DefaultConfig()
	cfg.Servers = servers
	cfg.Timeout = config.Duration(opts.StepTimeout)
	cfg.Retries = 1
	res, err := resolver.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: resolver: %w", ErrUsage, err)
	}
	a := &auditor{opts: opts, domain: domain, res: res, servers: res.Servers(), rep: &Report{Domain: domain}}

	mxs := a.checkMX(ctx)
	a.checkDNSSEC(ctx)
	a.checkSPF(ctx, mxs)
	a.checkDKIM(ctx)
	a.checkDMARC(ctx)
	a.checkMTASTS(ctx, mxs)
	a.checkTLSRPT(ctx)
	if !opts.SkipSMTP {
		for _, mx := range mxs {
			if ctx.Err() != nil {
				break
			}
			a.checkSMTP(ctx, mx)
		}
	}
	if !opts.SkipMTA && ctx.Err() == nil {
		a.checkMTA(ctx)
	}
	a.checkMoatConfig()
	if err := ctx.Err(); err != nil {
		s := section{a.rep, "audit"}
		s.fail("deadline", "raise --timeout, or fix the slow server named above",
			"the run was cut short: %v", err)
	}
	return a.rep, nil
}

// auditor carries one run's state.
type auditor struct {
	opts    Options
	domain  string
	res     *resolver.Resolver
	servers []string
	rep     *Report
}

func (a *auditor) section(name string) section { return section{a.rep, name} }

// step returns a context for one network step.
func (a *auditor) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.opts.StepTimeout)
}

// isHostName reports whether d is a DNS name of at least two labels of letters, digits, '-' and '_'.
func isHostName(d string) bool {
	labels := strings.Split(d, ".")
	if len(labels) < 2 || len(d) > 253 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
