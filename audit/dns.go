package audit

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/miekg/dns"

	"github.com/moatmail/moat/auth/rdns"
	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
)

// mxHost is one MX of the domain with what DNS says about it.
type mxHost struct {
	Name  string // without the trailing dot, lower case
	Pref  uint16
	Addrs []netip.Addr
	// PTR holds, per address, the PTR names that resolve back to it (forward-confirmed).
	PTR map[netip.Addr][]string
}

// checkMX checks the MX records, each MX host's addresses and their PTR names, and returns the MX hosts
// (none for a null MX or when there is no MX).
func (a *auditor) checkMX(ctx context.Context) []*mxHost {
	s := a.section("dns")
	sctx, cancel := a.step(ctx)
	recs, err := a.res.LookupMX(sctx, a.domain)
	cancel()
	switch {
	case resolver.IsNotFound(err):
		s.fail("mx", fmt.Sprintf("publish an MX record: %s. IN MX 10 mail.%s. (or a null MX \"0 .\" if it takes no mail)", a.domain, a.domain),
			"%s has no MX record", a.domain)
		return nil
	case err != nil:
		s.fail("mx", "make the domain's name servers answer", "MX lookup failed: %v", err)
		return nil
	}
	// RFC 7505 section 3: a null MX is a single record with preference 0 and target ".".
	if len(recs) == 1 && recs[0].Host == "." {
		s.pass("mx", "null MX: %s receives no mail (RFC 7505)", a.domain)
		return nil
	}
	var mxs []*mxHost
	for _, r := range recs {
		if r.Host == "." {
			s.fail("mx", "a null MX must be the only MX record: remove the \"0 .\" record or the others",
				"null MX mixed with other MX records")
			continue
		}
		mxs = append(mxs, &mxHost{Name: addr.Domain(r.Host), Pref: r.Pref, PTR: map[netip.Addr][]string{}})
	}
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	names := make([]string, len(mxs))
	for i, m := range mxs {
		names[i] = fmt.Sprintf("%d %s", m.Pref, m.Name)
	}
	s.pass("mx", "MX: %s", strings.Join(names, ", "))

	for _, m := range mxs {
		sctx, cancel := a.step(ctx)
		addrs, err := a.res.LookupIPAddr(sctx, m.Name)
		cancel()
		if err != nil {
			s.fail("mx-address", fmt.Sprintf("publish A and/or AAAA records for %s", m.Name), "%s: no address: %v", m.Name, err)
			continue
		}
		var list []string
		for _, ip := range addrs {
			if x, ok := netip.AddrFromSlice(ip.IP); ok {
				m.Addrs = append(m.Addrs, x.Unmap())
				list = append(list, x.Unmap().String())
			}
		}
		s.pass("mx-address", "%s: %s", m.Name, strings.Join(list, ", "))
		for _, ip := range m.Addrs {
			sctx, cancel := a.step(ctx)
			r := rdns.Lookup(sctx, a.res, ip)
			cancel()
			fix := fmt.Sprintf("set the PTR of %s to %s (ask whoever holds the address block) and make %s resolve to %s", ip, m.Name, m.Name, ip)
			switch r.Status {
			case policy.StatusPass:
				m.PTR[ip] = r.Confirmed
				s.pass("ptr", "%s: PTR %s, forward-confirmed", ip, strings.Join(r.Confirmed, ", "))
			case policy.StatusPermError:
				s.fail("ptr", fix, "%s (%s): no PTR record", ip, m.Name)
			case policy.StatusFail:
				s.fail("ptr", fix, "%s (%s): PTR %s does not resolve back to %s (not forward-confirmed)", ip, m.Name, strings.Join(r.PTR, ", "), ip)
			default:
				s.warn("ptr", "make the reverse zone's servers answer", "%s: PTR lookup failed: %v", ip, r.Err)
			}
		}
	}
	return mxs
}

// checkAnnounced compares the name an MX announces in its banner with its addresses' confirmed PTR names.
func (a *auditor) checkAnnounced(mx *mxHost, announced string) {
	s := a.section("dns")
	announced = addr.Domain(announced)
	for _, ip := range mx.Addrs {
		ptr, ok := mx.PTR[ip]
		if !ok {
			continue // the PTR finding already says what is wrong
		}
		match := false
		for _, p := range ptr {
			match = match || p == announced
		}
		if match {
			s.pass("ptr-banner", "%s: the PTR name %s is the name the MTA announces", ip, announced)
		} else {
			s.fail("ptr-banner", fmt.Sprintf("make the banner name (Postfix: myhostname) and the PTR of %s the same name", ip),
				"%s: the MTA announces %q but the PTR says %s", ip, announced, strings.Join(ptr, ", "))
		}
	}
}

// checkDNSSEC asks for the domain's SOA with the DO bit and reports whether the resolver validated the
// answer (AD bit, RFC 4035 section 3.2.3). It asks the servers directly: moat's resolver does not keep
// the header bits.
func (a *auditor) checkDNSSEC(ctx context.Context) {
	s := a.section("dns")
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(a.domain), dns.TypeSOA)
	q.RecursionDesired = true
	q.AuthenticatedData = true // RFC 6840 section 5.7: ask for AD without needing DO answers
	q.SetEdns0(1232, true)
	c := &dns.Client{Timeout: a.opts.StepTimeout}
	var lastErr error
	for _, srv := range a.servers {
		sctx, cancel := a.step(ctx)
		m, _, err := c.ExchangeContext(sctx, q, srv)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		if m.AuthenticatedData {
			s.pass("dnssec", "%s is signed and the resolver %s validated it (AD bit)", a.domain, srv)
		} else {
			s.warn("dnssec", "sign the zone (DNSSEC) and use a validating resolver for moat's [dns]",
				"%s: not signed/validated (resolver %s answered without the AD bit)", a.domain, srv)
		}
		return
	}
	s.warn("dnssec", "make the resolver answer", "DNSSEC not checked: %v", lastErr)
}
