package dnsauth

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/test/stack"
)

// BenchmarkPostfixDNSChecks measures messages per second through real Postfix with moat running every DNS
// check (rdns, dnsbl, spf, dkim, dmarc) against moat with no checks, in the same run, interleaved, median of
// three; and the DNS queries per message once the cache is warm, counted at the DNS server (an in-process
// server in this test process, so that it can count).
//
//	smtp-source (10 sessions, 2,000 messages of 5 KB, HELO client.moat.test, MAIL FROM sender@example.org)
//	  -> Postfix (discard delivery) -> moat (unix socket) -> DNS server on 127.0.0.1
//
// smtp-source's messages carry no DKIM-Signature, so the verifier takes its dkim=none path; DKIM
// verification cost is measured in-process by BenchmarkDNSChecksWarm.
//
// Run: go test -run '^$' -bench PostfixDNSChecks -benchtime 1x ./test/dnsauth/
func BenchmarkPostfixDNSChecks(b *testing.B) {
	stack.Need(b, "smtp-source", "postfix")
	const rounds = 3
	load := stack.DefaultLoad
	load.Helo = "client.moat.test"
	srv := dnstest.Start(b,
		"1.0.0.127.in-addr.arpa. 300 IN PTR client.moat.test.",
		"client.moat.test. 300 IN A 127.0.0.1",
		`client.moat.test. 300 IN TXT "v=spf1 a -all"`,
		`example.org. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"`,
	)
	type variant struct{ name, checks string }
	variants := []variant{
		{"moat-nochecks", ""},
		{"moat-dnschecks", checksConfig},
	}
	addrs := make([]string, len(variants))
	for i, v := range variants {
		dir := stack.TempDir(b, "moat-dnsbench")
		sock := filepath.Join(dir, "moat.sock")
		cfg := fmt.Sprintf("[milter]\nlisten = [\"unix:%s\"]\nsocket_mode = \"0666\"\n[log]\nlevel = \"warn\"\n"+
			"[dns]\nservers = [%q]\ntimeout = \"1s\"\n[policy]\nauthserv_id = \"mx.moat.test\"\n%s", sock, srv.Addr, v.checks)
		path := filepath.Join(dir, "moat.toml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			b.Fatal(err)
		}
		stack.StartMoat(b, path, "unix:"+sock)
		addrs[i] = load.StartPostfix(b, "unix:"+sock).Addr
	}
	load.Warm(b, addrs) // Postfix processes forked, moat's cache filled
	if srv.Total() == 0 {
		b.Fatal("the warm-up asked the DNS nothing: the checks are not running")
	}
	b.Logf("warm-up (cold cache) DNS questions: %v", srv.Counts())
	srv.ResetCounts()
	b.ResetTimer()
	medians, runs := load.Compare(b, addrs, rounds)
	b.StopTimer()
	queries := srv.Total()
	base := medians[0]
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-16s %10s %8s  runs\n", "variant", "msgs/s", "ratio")
	for i, v := range variants {
		m := medians[i]
		fmt.Fprintf(&sb, "%-16s %10.0f %8.2f  %v\n", v.name, m, m/base, runs[i])
		b.ReportMetric(m, v.name+"_msgs/s")
		b.ReportMetric(m/base, v.name+"_ratio")
	}
	perMsg := float64(queries) / float64(rounds*load.Messages)
	fmt.Fprintf(&sb, "DNS queries with a warm cache: %d for %d messages (%.4f per message) %v\n", queries, rounds*load.Messages, perMsg, srv.Counts())
	b.ReportMetric(perMsg, "dnsqueries/msg")
	b.Log(sb.String())
}
