// Package spf implements moat's SPF check (RFC 7208) at MAIL FROM, with blitiri.com.ar/go/spf evaluating
// the records through moat's shared resolver.
//
// Two identities are checked (RFC 7208 section 2.3 and 2.4): the MAIL FROM identity, and the HELO identity
// when the HELO name is a domain. For the null sender the MAIL FROM identity is postmaster@HELO
// (section 2.4), which is the HELO check itself. The MAIL FROM result decides; the HELO result is recorded
// and has an action of its own (helo_fail). Authenticated clients and clients in the trusted networks are
// not checked.
//
// The facts policy.FactSPFResult (the RFC word) and policy.FactSPFDomain (the domain checked) are set for DMARC and
// greylisting. Each result has an action: by default fail is refused with 550 5.7.23 (RFC 7372 section
// 3.2), temperror is tempfailed with 451 4.7.24, softfail scores, the rest is recorded. Rejections wait for
// RCPT so that white lists win.
//
// # Configuration
//
//	[checks.spf]
//	fail = "reject"          # reject, tempfail, quarantine, score[:N], ignore
//	softfail = "score:1"
//	neutral = "ignore"
//	none = "ignore"
//	permerror = "ignore"
//	temperror = "tempfail"
//	check_helo = true        # also check the HELO identity
//	helo_fail = "ignore"     # action when the HELO identity fails (non-null sender)
package spf

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	libspf "blitiri.com.ar/go/spf"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/action"
)

func init() {
	policy.Register("spf", setup)
}

type cfg struct {
	Pass      string `toml:"pass"`
	Fail      string `toml:"fail"`
	Softfail  string `toml:"softfail"`
	Neutral   string `toml:"neutral"`
	None      string `toml:"none"`
	PermError string `toml:"permerror"`
	TempError string `toml:"temperror"`
	CheckHelo bool   `toml:"check_helo"`
	HeloFail  string `toml:"helo_fail"`
}

// Check is the spf check.
type Check struct {
	res       *resolver.Resolver
	actions   map[libspf.Result]action.Action
	heloFail  action.Action
	checkHelo bool
}

func setup(sec *config.Section, env *policy.Env) (policy.Check, error) {
	c := cfg{Pass: "ignore", Fail: "reject", Softfail: "score:1", Neutral: "ignore", None: "ignore",
		PermError: "ignore", TempError: "tempfail", CheckHelo: true, HeloFail: "ignore"}
	if err := sec.Decode(&c); err != nil {
		return nil, err
	}
	ch := &Check{actions: map[libspf.Result]action.Action{}, checkHelo: c.CheckHelo}
	for _, r := range []struct {
		key, val string
		res      libspf.Result
	}{
		{"pass", c.Pass, libspf.Pass}, {"fail", c.Fail, libspf.Fail}, {"softfail", c.Softfail, libspf.SoftFail},
		{"neutral", c.Neutral, libspf.Neutral}, {"none", c.None, libspf.None},
		{"permerror", c.PermError, libspf.PermError}, {"temperror", c.TempError, libspf.TempError},
	} {
		a, err := action.Parse(r.val, 1)
		if err != nil {
			return nil, sec.Errorf(r.key, "%v", err)
		}
		ch.actions[r.res] = a
	}
	a, err := action.Parse(c.HeloFail, 1)
	if err != nil {
		return nil, sec.Errorf("helo_fail", "%v", err)
	}
	ch.heloFail = a
	if ch.res, err = env.Resolver(); err != nil {
		return nil, err
	}
	return ch, nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return "spf" }

// Kind implements policy.Check.
func (c *Check) Kind() policy.Kind { return policy.KindAntispam }

// CheckHost evaluates SPF for ip, helo and sender (an address, or postmaster@helo for the null sender)
// through res.
func CheckHost(ctx context.Context, res *resolver.Resolver, ip netip.Addr, helo, sender string) (libspf.Result, error) {
	return libspf.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), helo, sender,
		libspf.WithResolver(res), libspf.WithContext(ctx))
}

// Mail checks the MAIL FROM and HELO identities.
func (c *Check) Mail(ctx context.Context, s *policy.Session) []policy.Finding {
	if s.Trusted() {
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "authenticated or trusted client"}}
	}
	if !s.ClientIP.IsValid() {
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "no client address"}}
	}
	helo := addr.Domain(strings.TrimSpace(s.Helo))
	heloIsName := helo != "" && !strings.HasPrefix(helo, "[") && !isIP(helo)
	var heloIDNErr error
	if heloIsName {
		// Domains are checked in A-label form (RFC 5890); one that does not convert is a permerror.
		if a, err := addr.DomainASCII(helo); err != nil {
			heloIDNErr = err
		} else {
			helo = a
		}
	}

	var out []policy.Finding
	var heloRes libspf.Result
	var heloErr error
	if heloIsName && (c.checkHelo || s.From.Null()) {
		if heloIDNErr != nil {
			heloRes, heloErr = libspf.PermError, heloIDNErr
		} else {
			heloRes, heloErr = CheckHost(ctx, c.res, s.ClientIP, helo, "postmaster@"+helo)
		}
	}

	var (
		res      libspf.Result
		err      error
		domain   string
		identity string
		prop     policy.Prop
	)
	switch {
	case s.From.Null() && heloIsName:
		res, err, domain, identity = heloRes, heloErr, helo, "postmaster@"+helo
		prop = policy.Prop{Type: "smtp", Property: "helo", Value: helo}
	case s.From.Null():
		res, domain = libspf.None, helo
		prop = policy.Prop{Type: "smtp", Property: "helo", Value: helo}
	case s.From.Domain == "" || strings.HasPrefix(s.From.Domain, "["):
		res, domain, identity = libspf.None, s.From.Domain, s.From.String()
		prop = policy.Prop{Type: "smtp", Property: "mailfrom", Value: s.From.String()}
	default:
		identity = s.From.String()
		prop = policy.Prop{Type: "smtp", Property: "mailfrom", Value: identity}
		if domain, err = addr.DomainASCII(s.From.Domain); err != nil {
			res, domain = libspf.PermError, s.From.Domain
			break
		}
		res, err = CheckHost(ctx, c.res, s.ClientIP, helo, identity[:strings.LastIndexByte(identity, '@')+1]+domain)
	}
	s.Set(policy.FactSPFResult, string(res))
	s.Set(policy.FactSPFDomain, domain)

	f := policy.Finding{Status: policy.Status(res), Reason: "spf-" + string(res), Err: errorOf(res, err),
		Detail:     fmt.Sprintf("%s for %s from %s", res, identity, s.ClientIP),
		AuthResult: &policy.AuthResult{Method: "spf", Result: string(res), Props: []policy.Prop{prop}},
		Tests:      []string{"SPF_" + strings.ToUpper(string(res))}}
	if err != nil {
		f.Detail += ": " + err.Error()
	}
	f.ApplyAction(c.actions[res], rejectReply(res, domain, s.ClientIP), tempReply(domain))
	out = append(out, f)

	if heloIsName && c.checkHelo && !s.From.Null() {
		hf := policy.Finding{Status: policy.Status(heloRes), Reason: "spf-helo-" + string(heloRes), Err: errorOf(heloRes, heloErr),
			Detail:     fmt.Sprintf("HELO identity %s: %s", helo, heloRes),
			AuthResult: &policy.AuthResult{Method: "spf", Result: string(heloRes), Props: []policy.Prop{{Type: "smtp", Property: "helo", Value: helo}}}}
		if heloRes == libspf.Fail {
			hf.ApplyAction(c.heloFail, rejectReply(heloRes, helo, s.ClientIP), tempReply(helo))
		}
		if heloErr != nil {
			hf.Detail += ": " + heloErr.Error()
		}
		out = append(out, hf)
	}
	return out
}

// errorOf returns the library's error when the result is an error (temperror, permerror), nil otherwise:
// for the other results the library explains how it got there ("matched ip", "no DNS record"), which is
// detail, not an error to log on every message.
func errorOf(res libspf.Result, err error) error {
	if res == libspf.TempError || res == libspf.PermError {
		return err
	}
	return nil
}

func rejectReply(res libspf.Result, domain string, ip netip.Addr) policy.Reply {
	domain = policy.ReplySafe(domain) // an invalid IDN stays as the client wrote it
	switch res {
	case libspf.PermError:
		// RFC 7372 section 3.2: 5.7.24 for an SPF permanent error.
		return policy.Reply{Code: 550, Enhanced: "5.7.24", Text: "SPF record of " + domain + " is invalid (permerror)"}
	case libspf.Fail:
		// RFC 7208 section 8.4, RFC 7372 section 3.2.
		return policy.Reply{Code: 550, Enhanced: "5.7.23",
			Text: fmt.Sprintf("SPF fail: %s does not designate [%s] as permitted sender", domain, ip.Unmap())}
	default:
		return policy.Reply{Code: 550, Enhanced: "5.7.23", Text: fmt.Sprintf("SPF %s for %s from [%s]", res, domain, ip.Unmap())}
	}
}

func tempReply(domain string) policy.Reply {
	domain = policy.ReplySafe(domain)
	// RFC 7208 section 8.6, RFC 7372 section 3.2.
	return policy.Reply{Code: 451, Enhanced: "4.7.24", Text: "SPF check of " + domain + " failed temporarily, please try again later"}
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
