package resolver

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// The lookup methods checks call, shaped like net.Resolver's, and the classification of their errors.

// notFound is the error for NXDOMAIN and for an answer without records of the asked type.
func notFound(name string, a *Answer) error {
	msg := "no such host"
	if a.Rcode == dns.RcodeSuccess {
		msg = "no record of the asked type"
	}
	return &net.DNSError{Err: msg, Name: strings.TrimSuffix(name, "."), IsNotFound: true}
}

// records asks and returns the records, or a not-found error when there are none.
func (r *Resolver) records(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	a, err := r.Query(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	if len(a.RRs) == 0 {
		return nil, notFound(name, a)
	}
	return a.RRs, nil
}

// LookupTXT returns the TXT records of name, the strings of each record joined (RFC 7208 section 3.3).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.records(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupMX returns the MX records of name, in the order received.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.records(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA records of host (both asked in parallel). An IP literal is returned
// as is. A temporary failure of one family fails the lookup only when the other family found nothing.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IPAddr{{IP: ip}}, nil
	}
	var (
		wg         sync.WaitGroup
		a4, a6     []dns.RR
		err4, err6 error
	)
	wg.Add(2)
	go func() { defer wg.Done(); a4, err4 = r.records(ctx, host, dns.TypeA) }()
	go func() { defer wg.Done(); a6, err6 = r.records(ctx, host, dns.TypeAAAA) }()
	wg.Wait()
	var out []net.IPAddr
	for _, rr := range a4 {
		out = append(out, net.IPAddr{IP: rr.(*dns.A).A})
	}
	for _, rr := range a6 {
		out = append(out, net.IPAddr{IP: rr.(*dns.AAAA).AAAA})
	}
	if len(out) > 0 {
		return out, nil
	}
	if isTemp(err4) {
		return nil, err4
	}
	if isTemp(err6) {
		return nil, err6
	}
	if err4 != nil {
		return nil, err4
	}
	return nil, err6
}

// LookupIP returns the addresses of host for one family: "ip4" (A) or "ip6" (AAAA).
func (r *Resolver) LookupIP(ctx context.Context, network, host string) ([]net.IP, error) {
	qtype := dns.TypeA
	if network == "ip6" {
		qtype = dns.TypeAAAA
	}
	rrs, err := r.records(ctx, host, qtype)
	if err != nil {
		return nil, err
	}
	out := make([]net.IP, 0, len(rrs))
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A)
		case *dns.AAAA:
			out = append(out, v.AAAA)
		}
	}
	return out, nil
}

// LookupAddr returns the PTR names of an IP address (fully qualified, with the trailing dot).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	rrs, err := r.records(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

func isTemp(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsTemporary
}

// IsNotFound reports whether err says the name or record does not exist (NXDOMAIN or no data).
func IsNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// IsTemporary reports whether err is a temporary failure (timeout, SERVFAIL, REFUSED, cancelled).
func IsTemporary(err error) bool { return isTemp(err) }
