package audit_test

import (
	"crypto"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatmail/moat/test/stack"
)

// signedZone is a tiny authoritative server for signed.test whose SOA and DNSKEY answers carry RRSIGs made
// with a key of its own, so that a validating unbound with that key as trust anchor sets the AD bit.
type signedZone struct {
	key  *dns.DNSKEY
	priv crypto.Signer
	soa  *dns.SOA
}

func newSignedZone(t *testing.T) *signedZone {
	t.Helper()
	key := &dns.DNSKEY{Hdr: dns.RR_Header{Name: "signed.test.", Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 300},
		Flags: 257, Protocol: 3, Algorithm: dns.ECDSAP256SHA256}
	priv, err := key.Generate(256)
	if err != nil {
		t.Fatal(err)
	}
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: "signed.test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
		Ns: "ns.signed.test.", Mbox: "hostmaster.signed.test.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}
	return &signedZone{key: key, priv: priv.(crypto.Signer), soa: soa}
}

func (z *signedZone) sign(t *testing.T, rrs ...dns.RR) dns.RR {
	sig := &dns.RRSIG{Hdr: dns.RR_Header{Name: "signed.test.", Rrtype: dns.TypeRRSIG, Class: dns.ClassINET, Ttl: 300},
		TypeCovered: rrs[0].Header().Rrtype, Algorithm: z.key.Algorithm, Labels: 2, OrigTtl: 300,
		Expiration: uint32(time.Now().Add(24 * time.Hour).Unix()), Inception: uint32(time.Now().Add(-time.Hour).Unix()),
		KeyTag: z.key.KeyTag(), SignerName: "signed.test."}
	if err := sig.Sign(z.priv, rrs); err != nil {
		t.Errorf("sign: %v", err)
	}
	return sig
}

// serve answers SOA and DNSKEY of signed.test (signed when the query has DO) and REFUSED for the rest.
func (z *signedZone) serve(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		do := r.IsEdns0() != nil && r.IsEdns0().Do()
		var rr dns.RR
		switch {
		case strings.EqualFold(q.Name, "signed.test.") && q.Qtype == dns.TypeSOA:
			rr = z.soa
		case strings.EqualFold(q.Name, "signed.test.") && q.Qtype == dns.TypeDNSKEY:
			rr = z.key
		default:
			m.Rcode = dns.RcodeRefused
		}
		if rr != nil {
			m.Answer = append(m.Answer, rr)
			if do {
				m.Answer = append(m.Answer, z.sign(t, rr))
			}
		}
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(opt.UDPSize(), opt.Do())
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// startValidating runs unbound as a validating resolver (validator and iterator) with signed.test stubbed to
// auth; with anchor, the zone's key is its trust anchor. Everything else is answered locally ("." static),
// so nothing is asked off the machine. It returns unbound's address once it answers.
func startValidating(t *testing.T, z *signedZone, auth string, anchor bool) string {
	t.Helper()
	unbound := stack.Bin(t, "unbound")
	authHost, authPort, _ := net.SplitHostPort(auth)
	dir := stack.TempDir(t, "unbound-dnssec")
	port := stack.FreePort(t)
	ta := ""
	if anchor {
		ta = "\ttrust-anchor: \"" + strings.ReplaceAll(z.key.String(), "\t", " ") + "\"\n"
	}
	conf := fmt.Sprintf(`server:
	interface: 127.0.0.1@%[1]d
	port: %[1]d
	do-ip6: no
	do-daemonize: no
	username: ""
	chroot: ""
	directory: "%[2]s"
	pidfile: "%[2]s/unbound.pid"
	logfile: "%[2]s/unbound.log"
	use-syslog: no
	num-threads: 1
	module-config: "validator iterator"
	access-control: 127.0.0.0/8 allow
	do-not-query-localhost: no
	local-zone: "." static
	local-zone: "signed.test." transparent
%[3]s	val-log-level: 2
	so-reuseport: no
stub-zone:
	name: "signed.test."
	stub-addr: %[4]s@%[5]s
	stub-prime: no
remote-control:
	control-enable: no
`, port, dir, ta, authHost, authPort)
	confPath := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unbound, "-d", "-c", confPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := &dns.Client{Timeout: time.Second}
	q := new(dns.Msg)
	q.SetQuestion("signed.test.", dns.TypeSOA)
	q.SetEdns0(1232, true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, _, err := c.Exchange(q, addr)
		if err == nil && m.Rcode == dns.RcodeSuccess {
			return addr
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "unbound.log"))
			t.Fatalf("validating unbound not answering: %v %v\n%s", m, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDNSSEC: a validating unbound with the zone's key as trust anchor sets AD, and the audit says the zone
// is signed and validated; the same unbound without the anchor cannot validate, and the audit warns.
func TestDNSSEC(t *testing.T) {
	bin := stack.BuildMoat(t)
	z := newSignedZone(t)
	auth := z.serve(t)

	r, _ := runAudit(t, bin, startValidating(t, z, auth, true), "--skip-smtp", "--skip-mta", "--step-timeout", "1s", "signed.test")
	r.must(t, "dns", "dnssec", "PASS", "signed.test is signed", "validated it (AD bit)")

	r, _ = runAudit(t, bin, startValidating(t, z, auth, false), "--skip-smtp", "--skip-mta", "--step-timeout", "1s", "signed.test")
	r.must(t, "dns", "dnssec", "WARN", "not signed/validated")
}
