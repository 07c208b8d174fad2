package envelope

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// EnvelopeBenchChecks is the checks configuration for measuring the envelope checks' cost through Postfix:
// every envelope check on, a 1,000-line barring list (in the file written by writeBenchLists), 1,000
// recipients, sender lists, for smtp-source's sender@example.org -> rcpt@example.test from 127.0.0.1
// (untrusted, so relay control does its full work). The lead's `make bench` can use the same table.
const envelopeBenchChecks = `
[checks.tlsauth]
require_tls_networks = ["192.0.2.0/24"]
require_tls_sender_domains = ["secure.example"]

[checks.relay]
local_domains = ["example.test", ".sub.example.test"]
relay_domains = ["partner.example"]
trusted_networks = ["10.0.0.0/8"]

[checks.recipients]
addresses_file = "%[1]s/recipients"

[checks.barring]
senders_file = "%[1]s/barring"
recipients_file = "%[1]s/barring"

[checks.senderlists]
whitelist_file = "%[1]s/whitelist"
blacklist_file = "%[1]s/blacklist"
`

// writeBenchLists writes the list files envelopeBenchChecks names into dir.
func writeBenchLists(tb testing.TB, dir string) {
	tb.Helper()
	var barring, rcpts, white, black strings.Builder
	for i := 0; i < 1000; i++ {
		switch i % 5 {
		case 0:
			fmt.Fprintf(&barring, "user%d@domain%d.example\n", i, i)
		case 1:
			fmt.Fprintf(&barring, "*@domain%d.example\n", i)
		case 2:
			fmt.Fprintf(&barring, "~boss%d@domain%d.example\n", i, i-1)
		case 3:
			fmt.Fprintf(&barring, "*@*%%%%%%%%*.host%d.example\n", i)
		case 4:
			fmt.Fprintf(&barring, "%%%%%%%%*@bulk%d.example\n", i)
		}
		fmt.Fprintf(&rcpts, "user%d@example.test\n", i)
		fmt.Fprintf(&white, "friend%d@white%d.example\n", i, i%50)
		fmt.Fprintf(&black, ".black%d.example\n", i)
	}
	rcpts.WriteString("rcpt@example.test\n")
	for name, content := range map[string]string{"barring": barring.String(), "recipients": rcpts.String(),
		"whitelist": white.String(), "blacklist": black.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// startBenchMoat starts moat with the given checks and returns the unix socket for smtpd_milters.
func startBenchMoat(b *testing.B, checks string) string {
	dir := stack.TempDir(b, "moat-envbench")
	sock := filepath.Join(dir, "moat.sock")
	writeBenchLists(b, dir)
	if checks != "" {
		checks = fmt.Sprintf(checks, dir)
	}
	cfg := fmt.Sprintf(`
[milter]
listen = ["unix:%s"]
socket_mode = "0666"
[log]
level = "warn"
[policy]
authserv_id = "mx.moat.test"
%s
`, sock, checks)
	path := filepath.Join(dir, "moat.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	stack.StartMoat(b, path, "unix:"+sock)
	return "unix:" + sock
}

// BenchmarkEnvelopeThroughput measures messages per second through Postfix (smtp-source, 10 sessions, 1,000
// messages of 5 KB, discard delivery) with moat running every envelope check, as a ratio to moat with no
// checks, the variants measured interleaved three times (median). A third variant leaves out senderlists, the
// only envelope check that also works at end of message (so the milter must pass the body).
func BenchmarkEnvelopeThroughput(b *testing.B) {
	stack.Need(b, "postfix", "smtp-source")
	load := stack.DefaultLoad
	load.Messages = 1000
	type variant struct{ name, checks string }
	noLists := envelopeBenchChecks[:strings.Index(envelopeBenchChecks, "[checks.senderlists]")]
	vs := []variant{{"moat-nochecks", ""}, {"moat-envelope", envelopeBenchChecks}, {"moat-envelope-no-senderlists", noLists}}
	const rounds = 3
	for i := 0; i < b.N; i++ {
		addrs := make([]string, len(vs))
		pfs := make([]*stack.Postfix, len(vs))
		for j, v := range vs {
			pfs[j] = load.StartPostfix(b, startBenchMoat(b, v.checks))
			addrs[j] = pfs[j].Addr
		}
		load.Warm(b, addrs)
		med, _ := load.Compare(b, addrs, rounds)
		// A refused message is quick: the rates only count if every message was accepted and delivered.
		for j, pf := range pfs {
			waitDelivered(b, pf, vs[j].name, load.Messages*(1+rounds))
		}
		for j := range vs {
			b.ReportMetric(med[j], vs[j].name+"_msgs/s")
		}
		b.ReportMetric(med[1]/med[0], "envelope/nochecks")
		b.ReportMetric(med[2]/med[0], "envelope-no-senderlists/nochecks")
		b.Logf("moat-nochecks %.0f msgs/s, moat-envelope %.0f msgs/s (ratio %.2f), without senderlists %.0f msgs/s (ratio %.2f)",
			med[0], med[1], med[1]/med[0], med[2], med[2]/med[0])
	}
}

// waitDelivered fails the benchmark unless Postfix delivered (to discard) at least n messages and refused none.
func waitDelivered(b *testing.B, pf *stack.Postfix, name string, n int) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		log := pf.Log()
		if r := strings.Count(log, "reject: "); r > 0 {
			b.Fatalf("%s: Postfix refused %d commands during the load:\n%s", name, r, log[max(0, len(log)-4000):])
		}
		sent := strings.Count(log, "status=sent")
		if sent >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d messages delivered, want %d", name, sent, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
