// Package throughput measures moat's throughput through a real, private Postfix with smtp-source, as ratios
// against baselines measured in the same run (the machine is shared and noisy: absolute numbers mean little).
//
//	smtp-source (10 sessions, 2,000 messages of 5 KB) -> Postfix (discard delivery) -> moat (milter)
//
// Run with `make bench` (go test -run '^$' -bench . ./test/throughput/). Each variant is measured three times,
// the variants interleaved, and the median reported.
package throughput

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/test/stack"
)

const rounds = 3

// variant is one way of running Postfix: alone, or with moat and a configuration.
type variant struct {
	name   string
	milter func(b *testing.B) string // returns smtpd_milters, "" for Postfix alone
}

// moatWith starts moat with the given checks configuration and returns the milter address of the requested
// transport ("unix" or "tcp").
func moatWith(checks string, transport string) func(b *testing.B) string {
	return func(b *testing.B) string {
		dir := stack.TempDir(b, "moat-bench")
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
		path := filepath.Join(dir, "moat.toml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			b.Fatal(err)
		}
		stack.StartMoat(b, path, "unix:"+sock, "tcp:"+tcp)
		if transport == "tcp" {
			return "inet:" + tcp
		}
		return "unix:" + sock
	}
}

// Variants measured by BenchmarkThroughput. The first is the baseline of every ratio.
var variants = []variant{
	{"postfix-alone", func(*testing.B) string { return "" }},
	{"moat-nochecks-unix", moatWith("", "unix")},
	{"moat-nochecks-tcp", moatWith("", "tcp")},
}

// measure starts one Postfix per variant and measures them interleaved.
func measure(b *testing.B, vs []variant) map[string]float64 {
	addrs := make([]string, len(vs))
	for i, v := range vs {
		addrs[i] = stack.DefaultLoad.StartPostfix(b, v.milter(b)).Addr
	}
	stack.DefaultLoad.Warm(b, addrs)
	medians, _ := stack.DefaultLoad.Compare(b, addrs, rounds)
	out := map[string]float64{}
	for i, v := range vs {
		out[v.name] = medians[i]
	}
	return out
}

func report(b *testing.B, vs []variant, got map[string]float64) {
	base := got[vs[0].name]
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-28s %12s %10s\n", "variant", "msgs/s", "ratio")
	for _, v := range vs {
		fmt.Fprintf(&sb, "%-28s %12.0f %10.2f\n", v.name, got[v.name], got[v.name]/base)
		b.ReportMetric(got[v.name], v.name+"_msgs/s")
		b.ReportMetric(got[v.name]/base, v.name+"_ratio")
	}
	b.Log(sb.String())
}

// BenchmarkThroughput: Postfix alone against Postfix + moat with no checks, over a unix socket and over TCP.
// Targets: moat with no checks at least 0.6 of Postfix alone; TCP within 10% of the unix socket.
func BenchmarkThroughput(b *testing.B) {
	for i := 0; i < b.N; i++ {
		got := measure(b, variants)
		report(b, variants, got)
		tcpVsUnix := got["moat-nochecks-tcp"] / got["moat-nochecks-unix"]
		b.ReportMetric(tcpVsUnix, "tcp/unix")
		b.Logf("tcp/unix = %.2f", tcpVsUnix)
	}
}
