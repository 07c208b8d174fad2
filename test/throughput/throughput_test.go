// Package throughput measures moat's throughput through a real, private Postfix with smtp-source, as ratios
// against baselines measured in the same run (the machine is shared and noisy: absolute numbers mean little).
//
//	smtp-source (10 sessions, 2,000 messages of 5 KB) -> Postfix (discard delivery) -> moat (milter)
//
// Run with `make bench` (go test -run '^$' -bench . ./test/throughput/). Each path is measured three times,
// the paths interleaved, and the median reported, with moat's CPU time per message read from /proc over each
// run. One more run of the every-check path is profiled (pprof CPU and allocations, through MOAT_PPROF); the
// bench prints the directory the profiles are written to.
package throughput

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/test/stack"
)

const rounds = 3

// path is one way of running Postfix: alone, or with moat and a configuration.
type path struct {
	name  string
	start func(b *testing.B) target
}

// target is a started path: the smtpd_milters value ("" for Postfix alone) and moat's process (nil: none).
type target struct {
	milter string
	moat   *stack.Moat
}

// moatConfig starts moat with the given checks configuration (relative file names are in dir) and returns
// the path of the requested transport ("unix" or "tcp"). pprof, when not "", is MOAT_PPROF's address.
func startMoat(b *testing.B, dir, checks, transport, pprof string) target {
	sock := filepath.Join(dir, "moat.sock")
	tcp := fmt.Sprintf("127.0.0.1:%d", stack.FreePort(b))
	cfg := fmt.Sprintf(`
[milter]
listen = ["unix:%s", "tcp:%s"]
socket_mode = "0666"
[log]
level = "warn"
[policy]
authserv_id = "mx.moat.test"
%s
`, sock, tcp, checks)
	conf := filepath.Join(dir, "moat.toml")
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Setenv("MOAT_PPROF", pprof)
	m := stack.StartMoat(b, conf, "unix:"+sock, "tcp:"+tcp)
	if transport == "tcp" {
		return target{"inet:" + tcp, m}
	}
	return target{"unix:" + sock, m}
}

func moatWith(checks string, transport string) func(b *testing.B) target {
	return func(b *testing.B) target {
		return startMoat(b, stack.TempDir(b, "moat-bench"), checks, transport, "")
	}
}

// run is one measured run of a path: its rate and moat's CPU time over it.
type run struct {
	rate float64
	cpu  time.Duration // moat's utime+stime over the run (0 without moat)
}

// cpuTime reads a process's user plus system time from /proc/PID/stat.
func cpuTime(b *testing.B, m *stack.Moat) time.Duration {
	if m == nil {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.Pid()))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// measureRun runs the load once against addr and reads moat's CPU time around it.
func measureRun(b *testing.B, load stack.Load, addr string, m *stack.Moat) run {
	before := cpuTime(b, m)
	rate := load.Rate(b, addr)
	return run{rate: rate, cpu: cpuTime(b, m) - before}
}

// result is a path's median rate and median CPU time per message.
type result struct {
	rate   float64
	cpuMsg time.Duration
	runs   []float64
}

func median[T float64 | time.Duration](v []T) T {
	s := append([]T{}, v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// compare runs the load rounds times against each target in turn, interleaved so that noise hits every path
// alike (the targets warmed first).
func compare(b *testing.B, load stack.Load, addrs []string, ts []target) []result {
	load.Warm(b, addrs)
	runs := make([][]run, len(addrs))
	for r := 0; r < rounds; r++ {
		for i, a := range addrs {
			runs[i] = append(runs[i], measureRun(b, load, a, ts[i].moat))
		}
	}
	out := make([]result, len(addrs))
	for i, rs := range runs {
		var rates []float64
		var cpus []time.Duration
		for _, r := range rs {
			rates = append(rates, r.rate)
			cpus = append(cpus, r.cpu/time.Duration(load.Messages))
		}
		out[i] = result{rate: median(rates), cpuMsg: median(cpus), runs: rates}
	}
	return out
}

// profile fetches a CPU profile of moat (at its MOAT_PPROF address) during one more load run, then its
// allocation profile, into dir.
func profile(b *testing.B, load stack.Load, addr, pprofAddr, dir, name string) {
	get := func(url, file string) error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(f, resp.Body)
		return err
	}
	secs := int(float64(load.Messages)/400) + 1 // about the length of one run
	done := make(chan error, 1)
	go func() {
		done <- get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, secs), name+".cpu.pprof")
	}()
	time.Sleep(100 * time.Millisecond)
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for time.Now().Before(deadline) {
		load.Rate(b, addr)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if err := get(fmt.Sprintf("http://%s/debug/pprof/allocs", pprofAddr), name+".allocs.pprof"); err != nil {
		b.Fatal(err)
	}
}

// profileDir is where the bench writes its profiles: $MOAT_PROFILE_DIR, else a new temporary directory that
// is kept after the run.
func profileDir(b *testing.B) string {
	if d := os.Getenv("MOAT_PROFILE_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "moat-profiles-")
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkThroughput measures the paths of the checks-cost table, as ratios to Postfix alone and to moat with
// no checks: moat with no checks (unix, TCP), every non-scanner check with a warm DNS cache and the greylist
// triplet already passed (unix, TCP), the same plus clamd, and clamd's own scan rate alone (10 parallel
// INSTREAM scans of the same 5 KB message). Targets: every check >= 0.95 of no checks and >= 0.6 of Postfix
// alone; with clamd within 5% of the time of (no checks + clamd alone).
func BenchmarkThroughput(b *testing.B) {
	stack.Need(b, "postfix", "smtp-source", "clamd")
	load := stack.DefaultLoad
	load.Helo = "client.moat.test"
	for i := 0; i < b.N; i++ {
		dns := startDNS(b)
		clamd := stack.StartClamd(b, stack.ClamdOptions{})
		pprofAddr := fmt.Sprintf("127.0.0.1:%d", stack.FreePort(b))
		paths := []path{
			{"postfix-alone", func(*testing.B) target { return target{} }},
			{"moat-nochecks-unix", moatWith("", "unix")},
			{"moat-nochecks-tcp", moatWith("", "tcp")},
			{"moat-checks-unix", checksPath(dns, "", "unix", pprofAddr)},
			{"moat-checks-tcp", checksPath(dns, "", "tcp", "")},
			{"moat-checks-clamd-unix", checksPath(dns, clamd.Socket, "unix", "")},
		}
		ts := make([]target, len(paths))
		addrs := make([]string, len(paths))
		for j, p := range paths {
			ts[j] = p.start(b)
			addrs[j] = load.StartPostfix(b, ts[j].milter).Addr
			if ts[j].moat != nil && strings.HasPrefix(p.name, "moat-checks") {
				passGreylist(b, load, addrs[j])
			}
		}
		dns.ResetCounts()
		res := compare(b, load, addrs, ts)
		queries := dns.Total()
		clamdAlone := clamdRate(b, clamd, load)

		dir := profileDir(b)
		profile(b, load, addrs[3], pprofAddr, dir, "moat-checks-unix")
		reportTable(b, paths, res, clamdAlone, queries, load, dir)
	}
}

func reportTable(b *testing.B, paths []path, res []result, clamdAlone float64, queries int, load stack.Load, dir string) {
	byName := map[string]result{}
	for i, p := range paths {
		byName[p.name] = res[i]
	}
	base, none := byName["postfix-alone"].rate, byName["moat-nochecks-unix"].rate
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-26s %9s %10s %12s %14s  runs (msgs/s)\n", "path", "msgs/s", "/postfix", "/nochecks", "moat CPU/msg")
	for _, p := range paths {
		r := byName[p.name]
		ref := none
		if strings.HasSuffix(p.name, "-tcp") {
			ref = byName["moat-nochecks-tcp"].rate
		}
		cpu := "-"
		if r.cpuMsg > 0 {
			cpu = r.cpuMsg.Round(time.Microsecond).String()
		}
		fmt.Fprintf(&sb, "%-26s %9.0f %10.2f %12.2f %14s  %.0f\n", p.name, r.rate, r.rate/base, r.rate/ref, cpu, r.runs)
		b.ReportMetric(r.rate/base, p.name+"_ratio")
		b.ReportMetric(float64(r.cpuMsg.Microseconds()), p.name+"_cpu_us/msg")
	}
	fmt.Fprintf(&sb, "%-26s %9.0f   (10 parallel INSTREAM scans of one %d-byte message, no Postfix, no moat)\n", "clamd-alone", clamdAlone, load.Size)
	// Time per message adds up: no checks plus clamd's own scan, against the measured path with clamd.
	predicted := 1 / (1/none + 1/clamdAlone)
	withClamd := byName["moat-checks-clamd-unix"].rate
	fmt.Fprintf(&sb, "checks+clamd against (nochecks + clamd alone) = %.0f / %.0f = %.2f (target >= 0.95)\n", withClamd, predicted, withClamd/predicted)
	fmt.Fprintf(&sb, "rspamd, emersion/go-milter: not installed on this machine, not measured\n")
	fmt.Fprintf(&sb, "DNS queries during the measured runs (warm cache): %d for %d messages\n", queries, 3*rounds*load.Messages)
	fmt.Fprintf(&sb, "profiles of moat-checks-unix (go tool pprof -top FILE): %s\n", dir)
	b.ReportMetric(byName["moat-checks-unix"].rate/none, "checks/nochecks-unix")
	b.ReportMetric(withClamd/predicted, "clamd/(nochecks+clamd-alone)")
	b.Log(sb.String())
}

// startDNS starts the test DNS server the checks ask: the client's PTR and A, SPF for the HELO name and the
// sender's domain, DMARC for the sender's domain; the DNSBL zones have no records (every lookup NXDOMAIN).
func startDNS(b *testing.B) *dnstest.Server {
	return dnstest.Start(b,
		"1.0.0.127.in-addr.arpa. 300 IN PTR client.moat.test.",
		"client.moat.test. 300 IN A 127.0.0.1",
		`client.moat.test. 300 IN TXT "v=spf1 a -all"`,
		`example.org. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"`,
		"bl1.test. 300 IN SOA ns.bl1.test. hostmaster.bl1.test. 1 3600 600 86400 300",
		"bl2.test. 300 IN SOA ns.bl2.test. hostmaster.bl2.test. 1 3600 600 86400 300",
		"bl3.test. 300 IN SOA ns.bl3.test. hostmaster.bl3.test. 1 3600 600 86400 300",
	)
}

// checksConfig is every non-scanner check, for smtp-source's sender@example.org -> rcpt@example.test from
// 127.0.0.1 (untrusted, so relay control and greylisting do their full work), with the lists of writeLists.
const checksConfig = `
[dns]
servers = [%q]
timeout = "1s"
[store]
backend = "sqlite"
path = "moat.db"
[checks.tlsauth]
require_tls_networks = ["192.0.2.0/24"]
require_tls_sender_domains = ["secure.example"]
[checks.relay]
local_domains = ["example.test"]
trusted_networks = ["10.0.0.0/8"]
[checks.recipients]
addresses_file = "recipients"
[checks.barring]
senders_file = "barring"
recipients_file = "barring"
[checks.senderlists]
whitelist_file = "whitelist"
blacklist_file = "blacklist"
[checks.dnsbl]
threshold = 3
[[checks.dnsbl.lists]]
zone = "bl1.test"
[[checks.dnsbl.lists]]
zone = "bl2.test"
[[checks.dnsbl.lists]]
zone = "bl3.test"
[checks.rdns]
[checks.spf]
[checks.greylist]
delay = "1s"
[checks.dkim]
[checks.dmarc]
`

// checksPath starts moat with every non-scanner check, plus clamd when clamdSocket is not "".
func checksPath(dns *dnstest.Server, clamdSocket, transport, pprof string) func(b *testing.B) target {
	return func(b *testing.B) target {
		dir := stack.TempDir(b, "moat-bench")
		writeLists(b, dir)
		checks := fmt.Sprintf(checksConfig, dns.Addr)
		if clamdSocket != "" {
			checks += fmt.Sprintf("[checks.clamd]\nservers = [\"unix:%s\"]\n", clamdSocket)
		}
		return startMoat(b, dir, checks, transport, pprof)
	}
}

// writeLists writes the list files of checksConfig: 1,000 lines each, none matching the load's addresses.
func writeLists(b *testing.B, dir string) {
	var barring, rcpts, white, black strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&barring, "*@domain%d.example\n", i)
		fmt.Fprintf(&rcpts, "user%d@example.test\n", i)
		fmt.Fprintf(&white, "friend%d@white%d.example\n", i, i%50)
		fmt.Fprintf(&black, ".black%d.example\n", i)
	}
	rcpts.WriteString("rcpt@example.test\n")
	for name, content := range map[string]string{"barring": barring.String(), "recipients": rcpts.String(),
		"whitelist": white.String(), "blacklist": black.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// passGreylist sends the load's triplet through addr until greylisting lets it pass (the first attempt is
// greylisted, the retry after the 1 s delay passes), so that the measured runs take the known-triplet path.
func passGreylist(b *testing.B, load stack.Load, addr string) {
	msg := stack.Message(load.From, load.To, "greylist warm-up", "warm-up\r\n")
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := stack.SendMail(b, addr, load.Helo, load.From, []string{load.To}, msg)
		if res.OK() {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("greylist warm-up: still refused: %v", res)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// clamdRate is clamd's own scan rate: load.Messages INSTREAM scans of one message of load.Size bytes, from
// load.Sessions connections at a time.
func clamdRate(b *testing.B, c *stack.Clamd, load stack.Load) float64 {
	msg := stack.Message(load.From, load.To, "clamd alone", strings.Repeat("x", load.Size-200)+"\r\n")
	ctx := context.Background()
	work := make(chan struct{}, load.Messages)
	for i := 0; i < load.Messages; i++ {
		work <- struct{}{}
	}
	close(work)
	errs := make(chan error, load.Sessions)
	start := time.Now()
	for i := 0; i < load.Sessions; i++ {
		go func() {
			for range work {
				if err := instream(ctx, c.Socket, msg); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < load.Sessions; i++ {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	return float64(load.Messages) / time.Since(start).Seconds()
}
