// Package tlsauth implements the TLS and SMTP AUTH policy: it refuses authenticated sessions without TLS and
// requires TLS for listed client networks and sender domains, from the MTA's macros ({tls_version}, {cipher},
// {cert_subject}, {auth_type}, {auth_authen}).
//
// The decision is made at MAIL FROM: by then the MTA has sent the TLS and AUTH macros, and the sender domain is
// known. The answer is "530 5.7.0 Must issue a STARTTLS command first" (RFC 3207 section 4), or with
// answer = "tempfail", "450 4.7.0" so that a misconfigured client retries rather than bounces.
//
// Every MAIL gets a finding whose Detail lists the session's TLS and AUTH facts (version, cipher, key bits,
// client certificate subject and issuer, AUTH mechanism and user); the engine's trace header carries the
// TLS version, cipher and AUTH user, and Authentication-Results the smtp.auth property.
package tlsauth

import (
	"context"
	"fmt"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/lists"
	"github.com/moatmail/moat/policy"
)

// Name is the check's registered name.
const Name = "tlsauth"

// Reasons.
const (
	ReasonAuthWithoutTLS = "auth-without-tls"
	ReasonNetwork        = "tls-required-network"
	ReasonSender         = "tls-required-sender"
)

// Session facts set at MAIL for later checks.
const (
	FactTLS  = "tlsauth/tls"  // the TLS version, "" without TLS
	FactAuth = "tlsauth/auth" // the AUTH mechanism, "" when not authenticated
)

func init() { policy.Register(Name, setup) }

// Config is the [checks.tlsauth] table.
type Config struct {
	// RequireTLSForAuth refuses mail from clients that authenticated without TLS (default true).
	RequireTLSForAuth bool `toml:"require_tls_for_auth"`
	// RequireTLSNetworks: clients (IP or CIDR) that must use TLS.
	RequireTLSNetworks     []string `toml:"require_tls_networks"`
	RequireTLSNetworksFile string   `toml:"require_tls_networks_file"`
	// RequireTLSSenderDomains: envelope sender domains that must arrive over TLS (".example.com" covers
	// subdomains).
	RequireTLSSenderDomains     []string `toml:"require_tls_sender_domains"`
	RequireTLSSenderDomainsFile string   `toml:"require_tls_sender_domains_file"`
	// Answer is "reject" (530 5.7.0, default) or "tempfail" (450 4.7.0).
	Answer string `toml:"answer"`
	// Text is the reply text after the codes.
	Text string `toml:"text"`
}

// DefaultConfig returns the defaults of the table.
func DefaultConfig() Config {
	return Config{RequireTLSForAuth: true, Answer: "reject", Text: "Must issue a STARTTLS command first"}
}

// Check is the TLS/AUTH policy check.
type Check struct {
	cfg      Config
	networks *lists.Networks
	senders  *lists.Domains
}

func setup(sec *config.Section, _ *policy.Env) (policy.Check, error) {
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(sec, cfg)
}

// New builds the check from a decoded configuration; sec locates errors.
func New(sec *config.Section, cfg Config) (*Check, error) {
	if cfg.Answer != "reject" && cfg.Answer != "tempfail" {
		return nil, sec.Errorf("answer", "must be \"reject\" or \"tempfail\", not %q", cfg.Answer)
	}
	if strings.TrimSpace(cfg.Text) == "" || strings.ContainsAny(cfg.Text, "\r\n") {
		return nil, sec.Errorf("text", "must be one non-empty line")
	}
	c := &Check{cfg: cfg}
	var err error
	if c.networks, err = lists.LoadNetworks(sec, "require_tls_networks", cfg.RequireTLSNetworks,
		"require_tls_networks_file", cfg.RequireTLSNetworksFile, nil); err != nil {
		return nil, err
	}
	if c.senders, err = lists.LoadDomains(sec, "require_tls_sender_domains", cfg.RequireTLSSenderDomains,
		"require_tls_sender_domains_file", cfg.RequireTLSSenderDomainsFile, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// Kind implements policy.Check: TLS/AUTH policy is access control and always runs.
func (c *Check) Kind() policy.Kind { return policy.KindAccess }

// Mail records the session's TLS and AUTH facts and applies the policy.
func (c *Check) Mail(_ context.Context, s *policy.Session) []policy.Finding {
	facts := Facts(s)
	s.Set(FactTLS, s.TLS.Version)
	if s.Auth.Authenticated() {
		s.Set(FactAuth, s.Auth.Type)
	}
	if s.TLS.Active() {
		return []policy.Finding{{Status: policy.StatusPass, Reason: "tls", Detail: facts}}
	}
	var reason, why string
	switch {
	case c.cfg.RequireTLSForAuth && s.Auth.Authenticated():
		reason, why = ReasonAuthWithoutTLS, "authenticated without TLS"
	case c.networks.Contains(s.ClientIP):
		reason, why = ReasonNetwork, "client "+s.ClientIP.String()+" must use TLS"
	case !s.From.Null() && c.senders.Contains(addr.Domain(s.From.Domain)):
		reason, why = ReasonSender, "sender domain "+s.From.Domain+" must use TLS"
	default:
		return []policy.Finding{{Status: policy.StatusNone, Reason: "no-tls", Detail: facts}}
	}
	var f policy.Finding
	if c.cfg.Answer == "tempfail" {
		f = policy.Tempfailf(policy.StatusFail, reason, 450, "4.7.0", "%s", c.cfg.Text)
	} else {
		// RFC 3207 section 4: 530 5.7.0 Must issue a STARTTLS command first.
		f = policy.Rejectf(policy.StatusFail, reason, 530, "5.7.0", "%s", c.cfg.Text)
	}
	f.Detail = why + "; " + facts
	return []policy.Finding{f}
}

// Facts describes the session's TLS and AUTH state in one line, for logs and `moat scan`.
func Facts(s *policy.Session) string {
	var parts []string
	if s.TLS.Active() {
		parts = append(parts, "tls="+orDash(s.TLS.Version), "cipher="+orDash(s.TLS.Cipher))
		if s.TLS.CipherBits != "" {
			parts = append(parts, "bits="+s.TLS.CipherBits)
		}
		if s.TLS.CertSubject != "" {
			parts = append(parts, fmt.Sprintf("cert_subject=%q", s.TLS.CertSubject))
		}
		if s.TLS.CertIssuer != "" {
			parts = append(parts, fmt.Sprintf("cert_issuer=%q", s.TLS.CertIssuer))
		}
	} else {
		parts = append(parts, "tls=none")
	}
	if s.Auth.Authenticated() {
		parts = append(parts, "auth="+orDash(s.Auth.Type), fmt.Sprintf("auth_user=%q", s.Auth.Authen))
	} else {
		parts = append(parts, "auth=none")
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
