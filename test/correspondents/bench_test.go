package correspondents_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// BenchmarkPostfixRecording measures outbound messages per second through Postfix (smtp-source, 10 sessions,
// 1,000 messages of 5 KB from a trusted network, discard delivery) with moat recording correspondents in
// SQLite and in Redis, as ratios to the same moat without the check (relay control only, which marks the
// client trusted), the variants measured interleaved three times (median).
func BenchmarkPostfixRecording(b *testing.B) {
	stack.Need(b, "postfix", "smtp-source", "redis-server")
	rds := stack.StartRedis(b)
	load := stack.DefaultLoad
	load.Messages = 1000
	load.From = "sender@local.example"
	// The check's local domain is local.example: rcpt@example.test (Postfix's mailbox) is a remote recipient.
	relay := "[checks.relay]\nlocal_domains = [\"example.test\"]\ntrusted_networks = [\"127.0.0.1/32\"]\n"
	corr := "[checks.correspondents]\nlocal_domains = [\"local.example\"]\n"
	type variant struct{ name, store, checks string }
	vs := []variant{
		{"nocheck", "", relay},
		{"sqlite", "", relay + corr},
		{"redis", fmt.Sprintf("[store]\nbackend = \"redis\"\nredis_addr = %q\nredis_prefix = %q\n", rds.Addr, randomPrefix()), relay + corr},
	}
	const rounds = 3
	for i := 0; i < b.N; i++ {
		addrs := make([]string, len(vs))
		pfs := make([]*stack.Postfix, len(vs))
		confs := make([]string, len(vs))
		for j, v := range vs {
			var sock string
			sock, confs[j] = startBenchMoat(b, v.store, v.checks)
			pfs[j] = load.StartPostfix(b, sock)
			addrs[j] = pfs[j].Addr
		}
		load.Warm(b, addrs)
		med, _ := load.Compare(b, addrs, rounds)
		for j, pf := range pfs {
			waitSent(b, pf, vs[j].name, load.Messages*(1+rounds))
		}
		// The check did record: the sender's one correspondent (address and domain) is in both stores.
		for j := 1; j < len(vs); j++ {
			out, err := exec.Command(stack.BuildMoat(b), "correspondents", "-c", confs[j], "list", load.From).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "2 correspondents of "+load.From) {
				b.Fatalf("%s: nothing recorded: %v\n%s", vs[j].name, err, out)
			}
		}
		for j := range vs {
			b.ReportMetric(med[j], vs[j].name+"_msgs/s")
		}
		b.ReportMetric(med[1]/med[0], "sqlite/nocheck")
		b.ReportMetric(med[2]/med[0], "redis/nocheck")
		b.Logf("outbound through Postfix: without the check %.0f msgs/s, recording in SQLite %.0f msgs/s (ratio %.2f), in Redis %.0f msgs/s (ratio %.2f)",
			med[0], med[1], med[1]/med[0], med[2], med[2]/med[0])
	}
}

// startBenchMoat starts moat with the given store and checks and returns the milter address and the
// configuration file.
func startBenchMoat(b *testing.B, storeTOML, checks string) (milter, conf string) {
	dir := stack.TempDir(b, "moat-corrbench")
	sock := filepath.Join(dir, "moat.sock")
	if storeTOML == "" {
		storeTOML = fmt.Sprintf("[store]\npath = %q\n", filepath.Join(dir, "moat.db"))
	}
	cfg := fmt.Sprintf("[milter]\nlisten = [\"unix:%s\"]\nsocket_mode = \"0666\"\n[log]\nlevel = \"warn\"\n%s%s", sock, storeTOML, checks)
	path := filepath.Join(dir, "moat.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	stack.StartMoat(b, path, "unix:"+sock)
	return "unix:" + sock, path
}

// waitSent fails the benchmark unless Postfix delivered (to discard) at least n messages and refused none.
func waitSent(b *testing.B, pf *stack.Postfix, name string, n int) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		log := pf.Log()
		if r := strings.Count(log, "reject: "); r > 0 {
			b.Fatalf("%s: Postfix refused %d commands during the load:\n%s", name, r, log[max(0, len(log)-4000):])
		}
		if strings.Count(log, "status=sent") >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d messages delivered, want %d", name, strings.Count(log, "status=sent"), n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
