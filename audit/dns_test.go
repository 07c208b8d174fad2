package audit

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatmail/moat/auth/resolver/dnstest"
)

// dnsOnly is the options of an audit that looks at DNS only.
func dnsOnly(domain string) Options {
	return Options{Domain: domain, SkipSMTP: true, SkipMTA: true}
}

func TestMXAddressesAndPTR(t *testing.T) {
	srv := dnstest.Start(t,
		"good.test. MX 10 mail.good.test.",
		"good.test. MX 20 mx2.good.test.",
		"mail.good.test. A 127.0.0.10",
		"10.0.0.127.in-addr.arpa. PTR mail.good.test.",
		// mx2's PTR names a host that does not resolve back to it.
		"mx2.good.test. A 127.0.0.11",
		"11.0.0.127.in-addr.arpa. PTR elsewhere.good.test.",
		"elsewhere.good.test. A 127.0.0.99",
		"addrless.test. MX 10 nowhere.addrless.test.",
		"noptr.test. MX 10 mail.noptr.test.",
		"mail.noptr.test. A 127.0.0.12",
		"null.test. MX 0 .",
		"mixed.test. MX 0 .",
		"mixed.test. MX 10 mail.good.test.",
	)
	rep := runAudit(t, srv, dnsOnly("good.test"))
	mustLevel(t, rep, "dns", "mx", Pass, "10 mail.good.test", "20 mx2.good.test")
	mustLevel(t, rep, "dns", "mx-address", Pass, "mail.good.test: 127.0.0.10")
	mustLevel(t, rep, "dns", "ptr", Pass, "127.0.0.10: PTR mail.good.test, forward-confirmed")
	mustLevel(t, rep, "dns", "ptr", Fail, "127.0.0.11", "not forward-confirmed")

	rep = runAudit(t, srv, dnsOnly("addrless.test"))
	mustLevel(t, rep, "dns", "mx-address", Fail, "nowhere.addrless.test: no address")

	rep = runAudit(t, srv, dnsOnly("noptr.test"))
	mustLevel(t, rep, "dns", "ptr", Fail, "127.0.0.12", "no PTR record")

	rep = runAudit(t, srv, dnsOnly("null.test"))
	mustLevel(t, rep, "dns", "mx", Pass, "null MX")
	mustNone(t, rep, "dns", "mx", Fail)

	rep = runAudit(t, srv, dnsOnly("mixed.test"))
	mustLevel(t, rep, "dns", "mx", Fail, "null MX mixed")

	rep = runAudit(t, srv, dnsOnly("nomx.test"))
	mustLevel(t, rep, "dns", "mx", Fail, "nomx.test has no MX record")
}

func TestMXLookupFailure(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set("broken.test.", dnstest.ServFail)
	rep := runAudit(t, srv, dnsOnly("broken.test"))
	mustLevel(t, rep, "dns", "mx", Fail, "MX lookup failed")
}

func TestAnnouncedNameAgainstPTR(t *testing.T) {
	a := &auditor{rep: &Report{}}
	ip := netip.MustParseAddr("192.0.2.25")
	mx := &mxHost{Name: "mx.example.org", Addrs: []netip.Addr{ip}, PTR: map[netip.Addr][]string{ip: {"mx.example.org"}}}
	a.checkAnnounced(mx, "MX.Example.Org.")
	mustLevel(t, a.rep, "dns", "ptr-banner", Pass, "mx.example.org")
	a.checkAnnounced(mx, "localhost.localdomain")
	mustLevel(t, a.rep, "dns", "ptr-banner", Fail, `announces "localhost.localdomain"`)
}

// TestDNSSECUnsigned: the test server never sets AD, as an unsigned zone or a non-validating resolver.
func TestDNSSECUnsigned(t *testing.T) {
	srv := dnstest.Start(t, "plain.test. SOA ns.plain.test. hostmaster.plain.test. 1 3600 600 86400 60")
	rep := runAudit(t, srv, dnsOnly("plain.test"))
	mustLevel(t, rep, "dns", "dnssec", Warn, "not signed/validated")
}

// TestDNSSECValidated serves answers with the AD bit, as a validating resolver does for a signed zone.
func TestDNSSECValidated(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adServer := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.AuthenticatedData = r.Question[0].Qtype == dns.TypeSOA
		_ = w.WriteMsg(m)
	})}
	go func() { _ = adServer.ActivateAndServe() }()
	t.Cleanup(func() { _ = adServer.Shutdown() })

	a := &auditor{opts: Options{StepTimeout: 2 * time.Second}, domain: "signed.test", servers: []string{pc.LocalAddr().String()}, rep: &Report{}}
	a.checkDNSSEC(t.Context())
	mustLevel(t, a.rep, "dns", "dnssec", Pass, "validated it (AD bit)")
}
