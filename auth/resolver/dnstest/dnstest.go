// Package dnstest implements a small authoritative DNS server for tests: it answers from records given as
// zone-file lines, over UDP and TCP on one 127.0.0.1 port, and can be told to answer NXDOMAIN, SERVFAIL or
// REFUSED for a name, to stay silent (a timeout), to delay, or to truncate its UDP answers. It counts the
// questions it receives so that tests can assert how many queries reached the server.
package dnstest

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Behaviour is what the server does for a name instead of answering from its records.
type Behaviour int

const (
	Answer      Behaviour = iota // answer from the records (NXDOMAIN when there are none for the name)
	NXDomain                     // answer NXDOMAIN
	ServFail                     // answer SERVFAIL
	Refused                      // answer REFUSED
	Timeout                      // never answer
	Truncate                     // answer with TC set and no records over UDP; fully over TCP
	FormErrEDNS                  // answer FORMERR to a query with an EDNS0 OPT record (an old server); answer without
)

// Server is a running test DNS server.
type Server struct {
	Addr string // "127.0.0.1:port" for UDP and TCP

	udp, tcp *dns.Server

	mu        sync.Mutex
	rrs       map[string][]dns.RR // by lower-case owner name
	behaviour map[string]Behaviour
	delay     map[string]time.Duration
	allDown   bool
	counts    map[string]int // "name/TYPE" -> questions received
	total     int
	inFlight  int // questions being answered now
	peak      int // most questions answered at once
}

// Start runs a server on 127.0.0.1 with records given as zone-file lines ("example.test. 300 IN TXT \"v=spf1 -all\"";
// a missing TTL is 300). It stops when the test ends.
func Start(t testing.TB, records ...string) *Server {
	t.Helper()
	s := &Server{rrs: map[string][]dns.RR{}, behaviour: map[string]Behaviour{}, delay: map[string]time.Duration{},
		counts: map[string]int{}}
	for _, r := range records {
		if err := s.Add(r); err != nil {
			t.Fatalf("dnstest: %v", err)
		}
	}
	var lastErr error
	for i := 0; i < 20; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: listen udp: %v", err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		s.Addr = addr
		h := dns.HandlerFunc(s.serve)
		s.udp = &dns.Server{PacketConn: pc, Handler: h}
		s.tcp = &dns.Server{Listener: ln, Handler: h}
		ready := make(chan struct{}, 2)
		s.udp.NotifyStartedFunc = func() { ready <- struct{}{} }
		s.tcp.NotifyStartedFunc = func() { ready <- struct{}{} }
		go func() { _ = s.udp.ActivateAndServe() }()
		go func() { _ = s.tcp.ActivateAndServe() }()
		<-ready
		<-ready
		t.Cleanup(s.Close)
		return s
	}
	t.Fatalf("dnstest: no port free for UDP and TCP: %v", lastErr)
	return nil
}

// Close stops the server.
func (s *Server) Close() {
	_ = s.udp.Shutdown()
	_ = s.tcp.Shutdown()
}

// Table returns a [dns] table of moat's configuration that sends the resolver to s, with the given timeout
// per query ("200ms") and no retries. It is four lines long.
func (s *Server) Table(timeout string) string {
	return fmt.Sprintf("[dns]\nservers = [%q]\ntimeout = %q\nretries = 0\n", s.Addr, timeout)
}

// Add adds one record given as a zone-file line.
func (s *Server) Add(record string) error {
	rr, err := dns.NewRR(record)
	if err != nil {
		return fmt.Errorf("record %q: %w", record, err)
	}
	if rr == nil {
		return fmt.Errorf("record %q: empty", record)
	}
	// dns.NewRR gives 3600 without a TTL; tests want a short known TTL unless they say otherwise.
	if f := strings.Fields(record); len(f) > 1 {
		if _, err := strconv.ParseUint(f[1], 10, 32); err != nil {
			rr.Header().Ttl = 300
		}
	}
	s.AddRR(rr)
	return nil
}

// AddRR adds one record built by the caller (for data that is awkward in zone-file syntax).
func (s *Server) AddRR(rr dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := wireName(rr.Header().Name)
	s.rrs[name] = append(s.rrs[name], rr)
}

// wireName is name as it arrives in a question: lower case, with the escapes a round trip through the wire
// format gives (a space becomes \032).
func wireName(name string) string {
	name = strings.ToLower(dns.Fqdn(name))
	buf := make([]byte, 512)
	n, err := dns.PackDomainName(name, buf, 0, nil, false)
	if err != nil {
		return name
	}
	out, _, err := dns.UnpackDomainName(buf[:n], 0)
	if err != nil {
		return name
	}
	return strings.ToLower(out)
}

// MustAdd is Add that fails the test on error.
func (s *Server) MustAdd(t testing.TB, records ...string) {
	t.Helper()
	for _, r := range records {
		if err := s.Add(r); err != nil {
			t.Fatal(err)
		}
	}
}

// Set makes the server behave as b for questions about name (any type).
func (s *Server) Set(name string, b Behaviour) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behaviour[wireName(name)] = b
}

// Delay makes the server wait d before answering questions about name.
func (s *Server) Delay(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay[wireName(name)] = d
}

// Down makes the server stop answering anything (true) or answer again (false).
func (s *Server) Down(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allDown = down
}

// Count returns how many questions for name and type (dns.TypeA, …) the server received.
func (s *Server) Count(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[wireName(name)+"/"+dns.TypeToString[qtype]]
}

// Total returns how many questions the server received.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Counts returns a copy of the per-question counters ("name./TYPE" -> n).
func (s *Server) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.counts))
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

// ResetCounts sets the counters to zero.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = map[string]int{}
	s.total = 0
	s.peak = s.inFlight
}

// PeakInFlight returns the largest number of questions the server was answering at the same time (a delayed
// answer stays in flight for its delay), since the start or the last ResetCounts.
func (s *Server) PeakInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	_, isTCP := w.RemoteAddr().(*net.TCPAddr)

	s.mu.Lock()
	s.counts[name+"/"+dns.TypeToString[q.Qtype]]++
	s.total++
	b := s.behaviour[name]
	d := s.delay[name]
	down := s.allDown
	s.inFlight++
	s.peak = max(s.peak, s.inFlight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()

	if down || b == Timeout {
		return
	}
	if d > 0 {
		time.Sleep(d)
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	switch b {
	case NXDomain:
		m.Rcode = dns.RcodeNameError
		m.Ns = s.soa(name)
	case ServFail:
		m.Rcode = dns.RcodeServerFailure
	case Refused:
		m.Rcode = dns.RcodeRefused
	case FormErrEDNS:
		if req.IsEdns0() != nil {
			m.Rcode = dns.RcodeFormatError
			_ = w.WriteMsg(m)
			return
		}
		s.answer(m, name, q.Qtype)
	case Truncate:
		if !isTCP {
			m.Truncated = true
			_ = w.WriteMsg(m)
			return
		}
		fallthrough
	default:
		s.answer(m, name, q.Qtype)
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	_ = w.WriteMsg(m)
}

// answer fills m from the records, following CNAMEs inside the server's data.
func (s *Server) answer(m *dns.Msg, name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	target := name
	for hop := 0; hop < 10; hop++ {
		rrs, exists := s.rrs[target]
		if !exists {
			if hop == 0 && !s.hasChildren(target) {
				m.Rcode = dns.RcodeNameError
			}
			break
		}
		var cname string
		found := false
		for _, rr := range rrs {
			switch {
			case rr.Header().Rrtype == qtype:
				m.Answer = append(m.Answer, dns.Copy(rr))
				found = true
			case rr.Header().Rrtype == dns.TypeCNAME && qtype != dns.TypeCNAME:
				m.Answer = append(m.Answer, dns.Copy(rr))
				cname = wireName(rr.(*dns.CNAME).Target)
			}
		}
		if found || cname == "" {
			break
		}
		target = cname
	}
	if len(m.Answer) == 0 || m.Rcode == dns.RcodeNameError {
		m.Ns = s.soa(name)
	}
}

func (s *Server) hasChildren(name string) bool {
	for n := range s.rrs {
		if strings.HasSuffix(n, "."+name) {
			return true
		}
	}
	return false
}

// soa is the SOA put in negative answers: TTL and minimum 60 seconds.
func (s *Server) soa(name string) []dns.RR {
	labels := dns.SplitDomainName(name)
	zone := "."
	if len(labels) >= 2 {
		zone = dns.Fqdn(strings.Join(labels[len(labels)-2:], "."))
	}
	suffix := zone
	if zone == "." {
		suffix = ""
	}
	return []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns." + suffix, Mbox: "hostmaster." + suffix, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}}
}
