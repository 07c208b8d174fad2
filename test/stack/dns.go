package stack

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DNS is a running unbound that answers only from local data.
type DNS struct {
	Addr string // "127.0.0.1:port", UDP and TCP
	Dir  string
	p    *proc
}

// defaultZones are always declared static so that unknown names are NXDOMAIN
// and nothing is ever recursed.
var defaultZones = []string{".", "test.", "in-addr.arpa.", "ip6.arpa."}

// StartDNS runs unbound with local-zone/local-data only (zone "." static), on
// UDP and TCP 127.0.0.1. records are unbound local-data RR strings such as
// `example.test. 300 IN TXT "v=spf1 -all"` or `4.3.2.1.in-addr.arpa. PTR mail.example.test.`.
// The zones ".", "test.", "in-addr.arpa." and "ip6.arpa." are declared static,
// so any name without data answers NXDOMAIN, a name with data but not of the
// asked type answers NOERROR with no answer (NODATA), and nothing is ever
// recursed. (Because "." is static no zone needs deriving from the records.)
// TXT values longer than 255 bytes must be split into several quoted
// strings: use TXTRecord.
func StartDNS(t testing.TB, records []string) *DNS {
	t.Helper()
	return StartDNSZones(t, nil, records)
}

// StartDNSZones is StartDNS with extra local-zone names declared static (for
// example to get NXDOMAIN with an SOA of one's own from a record set).
func StartDNSZones(t testing.TB, zones []string, records []string) *DNS {
	t.Helper()
	bin := mustBin(t, "unbound")
	dir := TempDir(t, "unbound")
	port := FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	zs := map[string]bool{}
	for _, z := range append(append([]string{}, defaultZones...), zones...) {
		z = strings.TrimSpace(z)
		if z == "" {
			continue
		}
		if !strings.HasSuffix(z, ".") {
			z += "."
		}
		zs[strings.ToLower(z)] = true
	}
	var zl []string
	for z := range zs {
		zl = append(zl, z)
	}
	sort.Strings(zl)

	var b strings.Builder
	fmt.Fprintf(&b, `server:
	interface: 127.0.0.1@%d
	port: %d
	do-ip4: yes
	do-ip6: no
	do-udp: yes
	do-tcp: yes
	do-daemonize: no
	username: ""
	chroot: ""
	directory: "%s"
	pidfile: "%s/unbound.pid"
	logfile: "%s/unbound.log"
	use-syslog: no
	verbosity: 1
	log-queries: no
	num-threads: 1
	module-config: "iterator"
	access-control: 127.0.0.0/8 allow
	unblock-lan-zones: yes
	insecure-lan-zones: yes
	local-zone: "localhost." nodefault
	minimal-responses: yes
	cache-max-ttl: 0
	cache-max-negative-ttl: 0
	msg-cache-size: 1m
	rrset-cache-size: 1m
	so-reuseport: no
	outgoing-range: 64
	num-queries-per-thread: 64
`, port, port, dir, dir, dir)
	for _, z := range zl {
		fmt.Fprintf(&b, "\tlocal-zone: %q static\n", z)
	}
	for _, r := range records {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		fmt.Fprintf(&b, "\tlocal-data: %s\n", quoteUnbound(r))
	}
	b.WriteString("remote-control:\n\tcontrol-enable: no\n")
	conf := filepath.Join(dir, "unbound.conf")
	writeFile(t, conf, b.String(), 0o644)

	if cc, err := lookBin("unbound-checkconf"); err == nil {
		if out, err := exec.Command(cc, conf).CombinedOutput(); err != nil {
			t.Fatalf("stack: unbound config rejected: %v\n%s\n--- %s ---\n%s", err, out, conf, b.String())
		}
	}

	cmd := exec.Command(bin, "-d", "-c", conf)
	cmd.Dir = dir
	p := startProc(t, "unbound", cmd, filepath.Join(dir, "unbound.log"))
	d := &DNS{Addr: addr, Dir: dir, p: p}
	t.Cleanup(d.Stop)
	// A query for the root SOA over TCP answers once unbound serves.
	p.waitReady(t, 10*time.Second, exchange("tcp", addr, dnsQuery("ready.test.", 16), "\x00"))
	return d
}

// Stop stops the server (safe to call twice); later queries time out or are refused.
func (d *DNS) Stop() { d.p.stop(syscall.SIGTERM, 3*time.Second) }

// quoteUnbound wraps an RR in double quotes for local-data, escaping embedded quotes
// the way unbound's config lexer wants: the outer quotes are single quotes when the
// RR holds double quotes (TXT records).
func quoteUnbound(rr string) string {
	if strings.Contains(rr, `"`) {
		if strings.Contains(rr, `'`) {
			// unbound cannot quote both; leave it as is.
			return "'" + rr + "'"
		}
		return "'" + rr + "'"
	}
	return `"` + rr + `"`
}

// dnsQuery builds a DNS query message in TCP framing (2-byte length prefix).
func dnsQuery(name string, qtype uint16) []byte {
	msg := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		msg = append(msg, byte(len(l)))
		msg = append(msg, l...)
	}
	msg = append(msg, 0, byte(qtype>>8), byte(qtype), 0, 1)
	return append([]byte{byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

// Pause freezes the daemon (SIGSTOP): it keeps its socket but answers
// nothing, so clients time out. Resume undoes it; Stop also works when paused.
func (d *DNS) Pause() { d.p.pause(true) }

// Resume continues a paused daemon (SIGCONT).
func (d *DNS) Resume() { d.p.pause(false) }

// TXTRecord returns a local-data TXT record for name holding value, split
// into quoted strings of at most 255 bytes as DNS requires (DKIM keys are
// longer than that); resolvers join them back into one value.
func TXTRecord(name, value string) string {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	var parts []string
	for len(value) > 255 {
		parts = append(parts, `"`+value[:255]+`"`)
		value = value[255:]
	}
	parts = append(parts, `"`+value+`"`)
	return name + " 300 IN TXT " + strings.Join(parts, " ")
}
