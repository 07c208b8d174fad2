package spf

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/config"
)

// The RFC 7208 test suite (openspf.org, release 2014.04, as carried by blitiri.com.ar/go/spf v1.6.0 in
// testdata/rfc7208-tests.yml), run through moat's resolver against an in-process DNS server that serves each
// suite's zone data over the wire.

type suite struct {
	Description string
	Tests       map[string]suiteTest
	ZoneData    map[string][]record `yaml:"zonedata"`
}

type suiteTest struct {
	Description string
	Helo        string
	Host        string
	MailFrom    string `yaml:"mailfrom"`
	Result      strings_
	Skip        string
}

type record struct {
	A         strings_ `yaml:"A"`
	AAAA      strings_ `yaml:"AAAA"`
	MX        []any    `yaml:"MX"`
	SPF       strings_ `yaml:"SPF"`
	TXT       strings_ `yaml:"TXT"`
	PTR       strings_ `yaml:"PTR"`
	CNAME     string   `yaml:"CNAME"`
	TIMEOUT   bool     `yaml:"TIMEOUT"`
	SERVFAIL  bool     `yaml:"SERVFAIL"`
	CNAMELOOP bool     `yaml:"CNAMELOOP"`
}

// strings_ decodes a YAML scalar or sequence of scalars.
type strings_ []string

func (s *strings_) UnmarshalYAML(n *yaml.Node) error {
	var list []string
	if err := n.Decode(&list); err == nil {
		*s = list
		return nil
	}
	var one string
	if err := n.Decode(&one); err != nil {
		return err
	}
	*s = []string{one}
	return nil
}

// deviations are the cases where moat's result differs from the suite's, beyond those the library marks
// with "skip" (its own known deviations, listed in README.md). The value says why.
var deviations = map[string]string{}

func hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: dns.Fqdn(name), Rrtype: t, Class: dns.ClassINET, Ttl: 300}
}

// splitTXT cuts a string into the 255-byte character-strings of a TXT record.
func splitTXT(s string) []string {
	if s == "" {
		return []string{""}
	}
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

// loadZone loads a suite's zone into srv and reports whether it has names marked TIMEOUT.
func loadZone(t *testing.T, srv *dnstest.Server, zd map[string][]record) (hasTimeout bool) {
	for domain, recs := range zd {
		name := dns.Fqdn(domain)
		if _, ok := dns.IsDomainName(name); !ok {
			t.Logf("zone name %q not representable, skipped", domain)
			continue
		}
		hasTXT := false
		for _, r := range recs {
			if len(r.TXT) > 0 {
				hasTXT = true
			}
		}
		for _, r := range recs {
			for _, a := range r.A {
				if ip := net.ParseIP(a); ip != nil && ip.To4() != nil {
					srv.AddRR(&dns.A{Hdr: hdr(name, dns.TypeA), A: ip.To4()})
				}
			}
			for _, a := range r.AAAA {
				if ip := net.ParseIP(a); ip != nil {
					srv.AddRR(&dns.AAAA{Hdr: hdr(name, dns.TypeAAAA), AAAA: ip})
				}
			}
			if len(r.MX) == 2 {
				prio, _ := r.MX[0].(int)
				host, _ := r.MX[1].(string)
				srv.AddRR(&dns.MX{Hdr: hdr(name, dns.TypeMX), Preference: uint16(prio), Mx: dns.Fqdn(host)})
			}
			for _, txt := range r.TXT {
				srv.AddRR(&dns.TXT{Hdr: hdr(name, dns.TypeTXT), Txt: splitTXT(txt)})
			}
			if len(r.SPF) > 0 && !hasTXT {
				// RFC 7208 dropped type SPF; like the library's own driver, serve it as TXT.
				srv.AddRR(&dns.TXT{Hdr: hdr(name, dns.TypeTXT), Txt: splitTXT(strings.Join(r.SPF, ""))})
			}
			for _, p := range r.PTR {
				srv.AddRR(&dns.PTR{Hdr: hdr(name, dns.TypePTR), Ptr: dns.Fqdn(p)})
			}
			if r.CNAME != "" {
				srv.AddRR(&dns.CNAME{Hdr: hdr(name, dns.TypeCNAME), Target: dns.Fqdn(r.CNAME)})
			}
			switch {
			case r.TIMEOUT:
				srv.Set(name, dnstest.Timeout)
				hasTimeout = true
			case r.SERVFAIL:
				srv.Set(name, dnstest.ServFail)
			case r.CNAMELOOP:
				srv.AddRR(&dns.CNAME{Hdr: hdr(name, dns.TypeCNAME), Target: name})
			}
		}
	}
	return hasTimeout
}

func TestRFC7208Suite(t *testing.T) {
	f, err := os.Open("testdata/rfc7208-tests.yml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var suites []suite
	for {
		var s suite
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		suites = append(suites, s)
	}
	total, passed, skipped := 0, 0, 0
	var failed []string
	for _, su := range suites {
		srv := dnstest.Start(t)
		hasTimeout := loadZone(t, srv, su.ZoneData)
		cfg := resolver.DefaultConfig()
		cfg.Servers = []string{srv.Addr}
		// A short timeout only where the suite has names that never answer (TIMEOUT), so that those cases stay
		// quick; everywhere else a loaded machine gets the default. One retry either way: a lost or late UDP
		// answer is not a failed case.
		cfg.Timeout = config.Duration(2 * time.Second)
		if hasTimeout {
			cfg.Timeout = config.Duration(300 * time.Millisecond)
		}
		cfg.Retries = 1
		res, err := resolver.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		names := make([]string, 0, len(su.Tests))
		for n := range su.Tests {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			tc := su.Tests[name]
			total++
			if tc.Skip != "" {
				skipped++
				continue
			}
			ip, err := netip.ParseAddr(tc.Host)
			if err != nil {
				t.Errorf("%s: bad host %q", name, tc.Host)
				continue
			}
			got, gotErr := CheckHost(context.Background(), res, ip, tc.Helo, tc.MailFrom)
			ok := false
			for _, w := range tc.Result {
				if w == string(got) {
					ok = true
				}
			}
			if ok {
				passed++
				if why, dev := deviations[name]; dev {
					t.Errorf("%s: listed as a deviation (%s) but passes now: update the list and README.md", name, why)
				}
				continue
			}
			if _, dev := deviations[name]; dev {
				continue
			}
			failed = append(failed, name)
			t.Errorf("%s (%s): got %s (%v), want %v", name, su.Description, got, gotErr, tc.Result)
		}
	}
	t.Logf("RFC 7208 suite: %d cases, %d pass, %d skipped as the library's known deviations, %d moat deviations, %d failed",
		total, passed, skipped, len(deviations), len(failed))
	if passed < 170 {
		t.Errorf("only %d cases pass", passed)
	}
}
