// Package rdns implements moat's reverse DNS check of the client: the PTR lookup of its address, the forward
// confirmation of the names found (FCrDNS, "iprev" in RFC 8601 section 3 and RFC 8601 section 2.7.3), the
// optional detection of dynamic-looking PTR names, and the checks of the HELO name (an address literal
// that is not the client's, a name or address that is our own, a name that does not resolve, a name that
// does not match the PTR).
//
// Each result has a configurable action: reject, tempfail, quarantine, score[:N] or ignore. A lookup that
// fails temporarily takes the action of the temperror key. The lookups run at connect (PTR, FCrDNS) and at
// HELO; the actions apply at MAIL, once moat knows whether the client authenticated (authenticated and
// trusted clients are exempt), and rejections wait for RCPT so that white lists win.
//
// The fact policy.FactFCrDNS is "pass" or "fail" for later checks; "iprev" goes into Authentication-Results.
//
// # Configuration
//
//	[checks.rdns]
//	no_ptr = "score:1"              # no PTR record for the client (iprev=permerror)
//	fcrdns_fail = "score:1"         # no PTR name resolves back to the client (iprev=fail)
//	dynamic = "ignore"              # the PTR name looks dynamic (IP digits, words such as dsl, pool)
//	helo_ip_mismatch = "score:1"    # HELO is an address literal that is not the client
//	helo_ours = "reject"            # HELO claims one of our_names or our_addresses
//	helo_no_resolve = "score:0.5"   # the HELO name has no A/AAAA record
//	helo_ptr_mismatch = "ignore"    # the HELO name is not one of the client's confirmed PTR names
//	temperror = "ignore"            # a lookup failed temporarily
//	our_names = ["mx.example.org"]
//	our_addresses = ["192.0.2.25"]
//	dynamic_words = ["dsl", "dynamic", "pool", …]
package rdns

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/action"
)

func init() {
	policy.Register("rdns", setup)
}

// Reasons, one per configurable rule.
const (
	ReasonNoPTR           = "rdns-no-ptr"
	ReasonFCrDNSFail      = "rdns-fcrdns-fail"
	ReasonDynamic         = "rdns-dynamic"
	ReasonHeloIPMismatch  = "helo-ip-mismatch"
	ReasonHeloOurs        = "helo-ours"
	ReasonHeloNoResolve   = "helo-no-resolve"
	ReasonHeloPTRMismatch = "helo-ptr-mismatch"
	ReasonTempError       = "rdns-temperror"
)

// Facts.
const (
	factNames   = "rdns/names" // confirmed PTR names, comma separated
	factConn    = "rdns/conn"  // reasons found at connect
	factHelo    = "rdns/helo"  // reasons found at HELO
	maxPTRNames = 10           // PTR names checked at most (RFC 8601 section 2.7.3 leaves it open; mox uses 10)
)

var defaultWords = []string{"dsl", "adsl", "xdsl", "vdsl", "dyn", "dynamic", "dynip", "pool", "dhcp", "dialup",
	"dial", "ppp", "pppoe", "cable", "broadband", "client", "customer", "cust", "cpe", "res", "residential",
	"mobile", "unassigned", "nat"}

type cfg struct {
	NoPTR           string   `toml:"no_ptr"`
	FCrDNSFail      string   `toml:"fcrdns_fail"`
	Dynamic         string   `toml:"dynamic"`
	HeloIPMismatch  string   `toml:"helo_ip_mismatch"`
	HeloOurs        string   `toml:"helo_ours"`
	HeloNoResolve   string   `toml:"helo_no_resolve"`
	HeloPTRMismatch string   `toml:"helo_ptr_mismatch"`
	TempError       string   `toml:"temperror"`
	OurNames        []string `toml:"our_names"`
	OurAddresses    []string `toml:"our_addresses"`
	DynamicWords    []string `toml:"dynamic_words"`
}

// Check is the rdns check.
type Check struct {
	res     *resolver.Resolver
	actions map[string]action.Action
	names   map[string]bool
	addrs   map[netip.Addr]bool
	words   map[string]bool
}

func setup(sec *config.Section, env *policy.Env) (policy.Check, error) {
	c := cfg{NoPTR: "score:1", FCrDNSFail: "score:1", Dynamic: "ignore", HeloIPMismatch: "score:1",
		HeloOurs: "reject", HeloNoResolve: "score:0.5", HeloPTRMismatch: "ignore", TempError: "ignore",
		DynamicWords: defaultWords}
	if err := sec.Decode(&c); err != nil {
		return nil, err
	}
	ch := &Check{actions: map[string]action.Action{}, names: map[string]bool{}, addrs: map[netip.Addr]bool{},
		words: map[string]bool{}}
	for _, r := range []struct{ key, val, reason string }{
		{"no_ptr", c.NoPTR, ReasonNoPTR}, {"fcrdns_fail", c.FCrDNSFail, ReasonFCrDNSFail},
		{"dynamic", c.Dynamic, ReasonDynamic}, {"helo_ip_mismatch", c.HeloIPMismatch, ReasonHeloIPMismatch},
		{"helo_ours", c.HeloOurs, ReasonHeloOurs}, {"helo_no_resolve", c.HeloNoResolve, ReasonHeloNoResolve},
		{"helo_ptr_mismatch", c.HeloPTRMismatch, ReasonHeloPTRMismatch}, {"temperror", c.TempError, ReasonTempError},
	} {
		a, err := action.Parse(r.val, 1)
		if err != nil {
			return nil, sec.Errorf(r.key, "%v", err)
		}
		ch.actions[r.reason] = a
	}
	for _, n := range c.OurNames {
		ch.names[addr.Domain(n)] = true
	}
	for i, a := range c.OurAddresses {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return nil, sec.Errorf(fmt.Sprintf("our_addresses[%d]", i), "%v", err)
		}
		ch.addrs[ip.Unmap()] = true
	}
	for _, w := range c.DynamicWords {
		ch.words[strings.ToLower(w)] = true
	}
	res, err := env.Resolver()
	if err != nil {
		return nil, err
	}
	ch.res = res
	return ch, nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return "rdns" }

// Kind implements policy.Check.
func (c *Check) Kind() policy.Kind { return policy.KindAntispam }

// Result is the outcome of the iprev check (RFC 8601 section 2.7.3).
type Result struct {
	Status    policy.Status // pass, fail, permerror (no PTR), temperror
	PTR       []string      // PTR names found, without the trailing dot
	Confirmed []string      // those whose addresses include the client's
	Err       error
}

// Lookup does the PTR lookup of ip and the forward confirmation of up to ten of the names.
func Lookup(ctx context.Context, res *resolver.Resolver, ip netip.Addr) Result {
	names, err := res.LookupAddr(ctx, ip.String())
	if err != nil {
		if resolver.IsNotFound(err) {
			return Result{Status: policy.StatusPermError, Err: err}
		}
		return Result{Status: policy.StatusTempError, Err: err}
	}
	r := Result{Status: policy.StatusFail}
	if len(names) > maxPTRNames {
		names = names[:maxPTRNames]
	}
	for i := range names {
		names[i] = addr.Domain(names[i])
	}
	r.PTR = names
	confirmed := make([]bool, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addrs, err := res.LookupIPAddr(ctx, n)
			if err != nil {
				errs[i] = err
				return
			}
			for _, a := range addrs {
				if x, ok := netip.AddrFromSlice(a.IP); ok && x.Unmap() == ip.Unmap() {
					confirmed[i] = true
				}
			}
		}()
	}
	wg.Wait()
	temp := false
	for i, n := range names {
		if confirmed[i] {
			r.Confirmed = append(r.Confirmed, n)
		} else if resolver.IsTemporary(errs[i]) {
			temp = true
			r.Err = errs[i]
		}
	}
	switch {
	case len(r.Confirmed) > 0:
		r.Status, r.Err = policy.StatusPass, nil
	case temp:
		r.Status = policy.StatusTempError
	}
	return r
}

// Connect looks up the client's PTR names and confirms them.
func (c *Check) Connect(ctx context.Context, s *policy.Session) []policy.Finding {
	if !s.ClientIP.IsValid() {
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "no client address"}}
	}
	r := Lookup(ctx, c.res, s.ClientIP)
	f := policy.Finding{Status: r.Status, Err: r.Err,
		AuthResult: &policy.AuthResult{Method: "iprev", Result: string(r.Status),
			Props: []policy.Prop{{Type: "policy", Property: "iprev", Value: s.ClientIP.Unmap().String()}}}}
	var reasons []string
	switch r.Status {
	case policy.StatusPass:
		s.Set(policy.FactFCrDNS, "pass")
		f.Detail = "FCrDNS pass: " + strings.Join(r.Confirmed, ",")
	case policy.StatusFail:
		s.Set(policy.FactFCrDNS, "fail")
		f.Detail = "no PTR name resolves back: " + strings.Join(r.PTR, ",")
		reasons = append(reasons, ReasonFCrDNSFail)
	case policy.StatusPermError:
		s.Set(policy.FactFCrDNS, "fail")
		f.Detail = "no PTR record"
		reasons = append(reasons, ReasonNoPTR)
	case policy.StatusTempError:
		f.Detail = "lookup failed: " + errString(r.Err)
		reasons = append(reasons, ReasonTempError)
	}
	s.Set(factNames, strings.Join(r.Confirmed, ","))
	out := []policy.Finding{f}
	if len(r.PTR) > 0 && c.actions[ReasonDynamic].Acts() {
		if why := c.dynamic(r.PTR[0], s.ClientIP); why != "" {
			reasons = append(reasons, ReasonDynamic)
			out = append(out, policy.Finding{Status: "dynamic", Detail: r.PTR[0] + ": " + why})
		}
	}
	s.Set(factConn, strings.Join(reasons, ","))
	return out
}

// Helo checks the HELO name.
func (c *Check) Helo(ctx context.Context, s *policy.Session) []policy.Finding {
	reasons, detail := c.heloReasons(ctx, s)
	s.Set(factHelo, strings.Join(reasons, ","))
	if len(reasons) == 0 {
		return []policy.Finding{{Status: policy.StatusPass, Detail: "HELO " + s.Helo + " ok"}}
	}
	return []policy.Finding{{Status: policy.StatusFail, Detail: "HELO " + s.Helo + ": " + detail}}
}

func (c *Check) heloReasons(ctx context.Context, s *policy.Session) (reasons []string, detail string) {
	h := strings.TrimSpace(s.Helo)
	lit := h
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		lit = strings.TrimPrefix(h[1:len(h)-1], "IPv6:") // RFC 5321 section 4.1.3
	}
	if ip, err := netip.ParseAddr(lit); err == nil {
		ip = ip.Unmap()
		client := s.ClientIP.Unmap()
		if c.addrs[ip] && ip != client {
			return []string{ReasonHeloOurs}, "claims our address " + ip.String()
		}
		if s.ClientIP.IsValid() && ip != client {
			return []string{ReasonHeloIPMismatch}, "address literal is not the client " + client.String()
		}
		return nil, ""
	}
	name := addr.Domain(h) // one spelling for U-labels and A-labels, so "claims our name" sees through either
	if name == "" {
		return []string{ReasonHeloNoResolve}, "empty"
	}
	if c.names[name] && !c.addrs[s.ClientIP.Unmap()] {
		return []string{ReasonHeloOurs}, "claims our name"
	}
	var details []string
	addrs, err := c.res.LookupIPAddr(ctx, name)
	switch {
	case resolver.IsTemporary(err):
		reasons = append(reasons, ReasonTempError)
		details = append(details, "lookup failed: "+err.Error())
	case err != nil:
		reasons = append(reasons, ReasonHeloNoResolve)
		details = append(details, "does not resolve")
	default:
		for _, a := range addrs {
			if x, ok := netip.AddrFromSlice(a.IP); ok && c.addrs[x.Unmap()] && !c.addrs[s.ClientIP.Unmap()] {
				return []string{ReasonHeloOurs}, "resolves to our address " + x.Unmap().String()
			}
		}
	}
	if confirmed := s.Get(factNames); confirmed != "" {
		match := false
		for _, n := range strings.Split(confirmed, ",") {
			if n == name {
				match = true
			}
		}
		if !match {
			reasons = append(reasons, ReasonHeloPTRMismatch)
			details = append(details, "not the PTR name "+confirmed)
		}
	}
	return reasons, strings.Join(details, "; ")
}

// Mail applies the configured actions to what connect and HELO found, unless the client is authenticated
// or trusted.
func (c *Check) Mail(ctx context.Context, s *policy.Session) []policy.Finding {
	var reasons []string
	for _, k := range []string{factConn, factHelo} {
		if v := s.Get(k); v != "" {
			reasons = append(reasons, strings.Split(v, ",")...)
		}
	}
	if len(reasons) == 0 {
		return []policy.Finding{{Status: policy.StatusPass}}
	}
	if s.Trusted() {
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "authenticated or trusted client: " + strings.Join(reasons, ",")}}
	}
	var out []policy.Finding
	seen := map[string]bool{}
	for _, r := range reasons {
		if seen[r] {
			continue
		}
		seen[r] = true
		a := c.actions[r]
		f := policy.Finding{Status: policy.StatusFail, Reason: r, Detail: describe(r, s)}
		if a.Kind == action.Score {
			f.Tests = []string{"RDNS_" + strings.ToUpper(strings.ReplaceAll(r, "-", "_")) + "=" + strconv.FormatFloat(a.Score, 'g', -1, 64)}
		}
		code, enh := 550, "5.7.25" // RFC 7372 section 3.3: reverse DNS validation failed
		if strings.HasPrefix(r, "helo-") {
			enh = "5.7.1"
		}
		if r == ReasonTempError {
			f.Status = policy.StatusTempError
		}
		f.ApplyAction(a, policy.Reply{Code: code, Enhanced: enh, Text: describe(r, s)},
			policy.Reply{Code: 451, Enhanced: "4.7.25", Text: "Reverse DNS lookup failed temporarily, please try again later"})
		out = append(out, f)
	}
	return out
}

func describe(reason string, s *policy.Session) string {
	ip := s.ClientIP.Unmap().String()
	switch reason {
	case ReasonNoPTR:
		return "Client host [" + ip + "] has no reverse DNS (PTR) record"
	case ReasonFCrDNSFail:
		return "Client host [" + ip + "]: reverse DNS name does not resolve back to the address"
	case ReasonDynamic:
		return "Client host [" + ip + "] looks like a dynamic address; use your provider's mail server"
	case ReasonHeloIPMismatch:
		return "HELO address literal is not the client's address"
	case ReasonHeloOurs:
		return "HELO claims to be this server"
	case ReasonHeloNoResolve:
		return "HELO name does not resolve"
	case ReasonHeloPTRMismatch:
		return "HELO name does not match the client's reverse DNS name"
	default:
		return "Reverse DNS lookup failed"
	}
}

// dynamic tells why a PTR name looks like a dynamic address, or "".
func (c *Check) dynamic(name string, ip netip.Addr) string {
	labels := strings.Split(strings.ToLower(name), ".")
	if len(labels) <= 2 {
		return ""
	}
	host := strings.Join(labels[:len(labels)-2], ".")
	// The address's digits in the name: 192-0-2-1, 1.2.0.192, 192000002001, c0000201.
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		var groups []string
		cur := ""
		for _, r := range host {
			if r >= '0' && r <= '9' {
				cur += string(r)
			} else if cur != "" {
				groups = append(groups, cur)
				cur = ""
			}
		}
		if cur != "" {
			groups = append(groups, cur)
		}
		fwd := []string{strconv.Itoa(int(b[0])), strconv.Itoa(int(b[1])), strconv.Itoa(int(b[2])), strconv.Itoa(int(b[3]))}
		rev := []string{fwd[3], fwd[2], fwd[1], fwd[0]}
		if containsRun(groups, fwd[1:]) || containsRun(groups, rev[:3]) {
			return "contains the address's digits"
		}
		if strings.Contains(host, fmt.Sprintf("%03d%03d%03d%03d", b[0], b[1], b[2], b[3])) ||
			strings.Contains(host, fmt.Sprintf("%02x%02x%02x%02x", b[0], b[1], b[2], b[3])) {
			return "contains the address's digits"
		}
	}
	tokens := strings.FieldsFunc(host, func(r rune) bool { return r < 'a' || r > 'z' })
	for _, t := range tokens {
		if c.words[t] {
			return "contains the word " + t
		}
	}
	return ""
}

func containsRun(groups, run []string) bool {
	for i := 0; i+len(run) <= len(groups); i++ {
		ok := true
		for j := range run {
			g := strings.TrimLeft(groups[i+j], "0")
			if g == "" {
				g = "0"
			}
			if g != run[j] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
