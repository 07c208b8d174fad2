package stack

import (
	"fmt"
	"os/exec"
	"sort"
	"testing"
	"time"
)

// Load is one smtp-source run (Postfix's load generator): Sessions SMTP sessions in parallel send Messages
// messages of Size bytes from From to To, greeting with Helo ("" for smtp-source's default).
type Load struct {
	Sessions, Messages, Size int
	Helo, From, To           string
}

// DefaultLoad is the load of moat's throughput benchmarks: 10 sessions, 2,000 messages of 5 KB.
var DefaultLoad = Load{Sessions: 10, Messages: 2000, Size: 5 * 1024, From: "sender@example.org", To: "rcpt@example.test"}

// StartLoadPostfix starts a Postfix for load runs: l.To's mailbox exists, every message is discarded, and
// the per-client limits that would throttle one load generator are off. milter is smtpd_milters ("" none).
func (l Load) StartPostfix(t testing.TB, milter string) *Postfix {
	t.Helper()
	return StartPostfix(t, PostfixOptions{Milter: milter, Mailboxes: []string{l.To}, Discard: true,
		ExtraMain: map[string]string{"smtpd_client_connection_count_limit": "0",
			"smtpd_client_message_rate_limit": "0", "smtpd_client_connection_rate_limit": "0"}})
}

// Rate runs the load once against addr and returns messages per second.
func (l Load) Rate(t testing.TB, addr string) float64 {
	t.Helper()
	Need(t, "smtp-source")
	args := []string{"-s", fmt.Sprint(l.Sessions), "-l", fmt.Sprint(l.Size), "-m", fmt.Sprint(l.Messages),
		"-f", l.From, "-t", l.To}
	if l.Helo != "" {
		args = append(args, "-M", l.Helo)
	}
	start := time.Now()
	if out, err := exec.Command(Bin(t, "smtp-source"), append(args, addr)...).CombinedOutput(); err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	return float64(l.Messages) / time.Since(start).Seconds()
}

// Warm runs the load once against each address: Postfix processes forked, moat's caches filled.
func (l Load) Warm(t testing.TB, addrs []string) {
	t.Helper()
	for _, a := range addrs {
		l.Rate(t, a)
	}
}

// Compare runs the load rounds times against each address in turn, interleaved so that noise hits every
// variant alike, and returns each address's median rate and all its runs. Warm the addresses first.
func (l Load) Compare(t testing.TB, addrs []string, rounds int) (medians []float64, runs [][]float64) {
	t.Helper()
	runs = make([][]float64, len(addrs))
	for r := 0; r < rounds; r++ {
		for i, a := range addrs {
			runs[i] = append(runs[i], l.Rate(t, a))
		}
	}
	medians = make([]float64, len(addrs))
	for i := range addrs {
		s := append([]float64{}, runs[i]...)
		sort.Float64s(s)
		medians[i] = s[len(s)/2]
	}
	return medians, runs
}
