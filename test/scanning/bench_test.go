package scanning

// Benchmarks of content scanning, run by `make bench` (they never run in `make test`):
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 30m ./test/scanning/
//
// BenchmarkSpamdOverhead (a): a fixed corpus scored by spamd through spamc alone, against the same corpus
// sent through Postfix + moat (spamd and clamd on), one message after the other, rounds interleaved on the
// same spamd; reports moat's added cost as a percentage of spamc's time (target: under 5%).
//
// BenchmarkRSS50MB (b): the growth of moat's resident memory while one 50 MB message passes through Postfix
// and moat (clamd scans it, spamd skips it as too large); target: under 16 MiB.

import (
	"bytes"
	"fmt"
	"math/rand"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// corpus returns n messages of about 4 KB: plain ham, HTML advertising and a few GTUBE, from a fixed seed so
// that every run scores the same mail.
func corpus(n int) [][]byte {
	rng := rand.New(rand.NewSource(6))
	words := strings.Fields("meeting budget review slides agenda minutes project release schedule invoice " +
		"customer report quarter design proposal draft contract team office holiday travel order delivery " +
		"free offer viagra cheap pills winner prize casino bonus click here unsubscribe lowest price guaranteed")
	var out [][]byte
	for i := 0; i < n; i++ {
		var body strings.Builder
		for body.Len() < 4000 {
			for j := 0; j < 12; j++ {
				body.WriteString(words[rng.Intn(len(words))])
				body.WriteByte(' ')
			}
			body.WriteString("\r\n")
		}
		ctype := "text/plain; charset=us-ascii"
		text := body.String()
		switch i % 10 {
		case 3, 7:
			ctype = "text/html; charset=us-ascii"
			text = "<html><body><p><b>DEAR FRIEND</b></p><p>" + text + "</p></body></html>\r\n"
		case 9:
			text = stack.GTUBE + "\r\n" + text
		}
		out = append(out, []byte(fmt.Sprintf("From: Sender %d <sender%d@example.org>\r\nTo: <%s>\r\nSubject: corpus message %d\r\n"+
			"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <corpus-%d@example.org>\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: %s\r\n\r\n%s", i, i, rcpt, i, i, ctype, text)))
	}
	return out
}

func spamcOne(b *testing.B, port string, m []byte) time.Duration {
	b.Helper()
	start := time.Now()
	cmd := exec.Command("spamc", "-d", "127.0.0.1", "-p", port, "-y", "-x")
	cmd.Stdin = bytes.NewReader(m)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("spamc: %v\n%s", err, out)
	}
	return time.Since(start)
}

func smtpOne(b *testing.B, addr string, m []byte) time.Duration {
	b.Helper()
	start := time.Now()
	res := stack.SendMail(b, addr, "client.example", sender, []string{rcpt}, m)
	// GTUBE is rejected (reject_score), everything else accepted; any other answer is an error.
	if !res.OK() && !(res.Code == 550 && strings.Contains(res.Text, "considered spam")) {
		b.Fatalf("%v", res)
	}
	return time.Since(start)
}

func medianDur(xs []time.Duration) time.Duration {
	s := append([]time.Duration(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkSpamdOverhead measures each message both ways back to back (alternating which goes first), so
// that the machine's noise, which comes in bursts of seconds, hits both paths alike; moat's added cost is
// the median of the paired differences over the median spamc time.
func BenchmarkSpamdOverhead(b *testing.B) {
	stack.Need(b, "spamc", "clamd", "spamd", "postfix")
	e := startAll(b, "tag_score = 5.0\nreject_score = 20.0\n", nil, stack.ClamdOptions{})
	_, port, _ := strings.Cut(e.spamd.Addr, ":")
	msgs := corpus(40)
	const rounds = 3
	for i := 0; i < b.N; i++ {
		for _, m := range msgs[:5] { // warm up both paths: spamd children, Postfix processes
			spamcOne(b, port, m)
			smtpOne(b, e.postfix.Addr, m)
		}
		var alone, through, diff []time.Duration
		var sumAlone, sumThrough time.Duration
		for r := 0; r < rounds; r++ {
			for j, m := range msgs {
				var a, t time.Duration
				if (r+j)%2 == 0 {
					a = spamcOne(b, port, m)
					t = smtpOne(b, e.postfix.Addr, m)
				} else {
					t = smtpOne(b, e.postfix.Addr, m)
					a = spamcOne(b, port, m)
				}
				alone, through, diff = append(alone, a), append(through, t), append(diff, t-a)
				sumAlone += a
				sumThrough += t
			}
		}
		ma, mt, md := medianDur(alone), medianDur(through), medianDur(diff)
		overhead := 100 * md.Seconds() / ma.Seconds()
		b.ReportMetric(ma.Seconds()*1000, "spamc_ms/msg")
		b.ReportMetric(mt.Seconds()*1000, "moat_ms/msg")
		b.ReportMetric(overhead, "overhead_%")
		b.Logf("%d messages x %d rounds, paired: median spamc alone %v, median Postfix+moat(spamd+clamd) %v, "+
			"median paired difference %v: moat adds %.1f%% (target < 5%%); totals %v vs %v (%.1f%%)",
			len(msgs), rounds, ma.Round(100*time.Microsecond), mt.Round(100*time.Microsecond), md.Round(100*time.Microsecond),
			overhead, sumAlone.Round(time.Millisecond), sumThrough.Round(time.Millisecond),
			100*(sumThrough.Seconds()-sumAlone.Seconds())/sumAlone.Seconds())
	}
}

func bigMessage(size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 1024)
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: big\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <big-%d@example.org>\r\n\r\n",
		sender, rcpt, time.Now().UnixNano())
	line := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 1) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

func BenchmarkRSS50MB(b *testing.B) {
	const size = 50 << 20
	e := startAll(b, "tag_score = 5.0\n", map[string]string{"message_size_limit": strconv.Itoa(size * 2)},
		stack.ClamdOptions{StreamMaxLength: "100M"})
	pid := e.moat.Pid()
	msg := bigMessage(size)
	for i := 0; i < b.N; i++ {
		// Warm up with a small message, then take the baseline.
		if res := stack.SendMail(b, e.postfix.Addr, "client.example", sender, []string{rcpt}, message("warm", "", hamBody)); !res.OK() {
			b.Fatalf("warm-up: %v", res)
		}
		time.Sleep(500 * time.Millisecond)
		rss, err := stack.StartRSSPeak(pid)
		if err != nil {
			b.Fatal(err)
		}
		base := rss.Base
		start := time.Now()
		res := stack.SendMail(b, e.postfix.Addr, "client.example", sender, []string{rcpt}, msg)
		elapsed := time.Since(start)
		peak := rss.Stop()
		if !res.OK() {
			b.Fatalf("50 MB message: %v\n%s", res, e.moat.Log())
		}
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(e.moat.Log(), `checks="clamd=clean spamd=skipped`); {
			if time.Now().After(deadline) {
				b.Fatalf("the 50 MB message was not scanned by clamd (and skipped by spamd):\n%s", e.moat.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
		growth := float64(peak-base) / 1024
		b.ReportMetric(float64(base)/1024, "base_RSS_MiB")
		b.ReportMetric(float64(peak)/1024, "peak_RSS_MiB")
		b.ReportMetric(growth, "growth_MiB")
		b.Logf("moat RSS %.1f MiB before, %.1f MiB at peak while a %d MB message passed in %v: growth %.1f MiB (target < 16)",
			float64(base)/1024, float64(peak)/1024, size>>20, elapsed.Round(time.Millisecond), growth)
	}
}
