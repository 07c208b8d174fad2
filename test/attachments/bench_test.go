package attachments

// Benchmarks run by `make bench` (never by `make test`):
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 30m ./test/attachments/
//
// BenchmarkPostfixCost: the mixed corpus (attachtest.Mixed) sent one message after the other through Postfix
// + moat with the attachments check (in dry-run mode, so every message is delivered either way) and through
// Postfix + moat with no check, rounds interleaved; reports the ratio of the median per-message times.
//
// BenchmarkRSS50MB1000Parts: the growth of moat's resident memory while one 50 MB message of 1,000 parts
// passes through Postfix and the check; target: under 16 MiB.

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/rules/attachments/attachtest"
	"github.com/moatmail/moat/test/stack"
)

type site struct {
	moat    *stack.Moat
	postfix *stack.Postfix
}

func startSite(b *testing.B, name, table string, extraMain map[string]string) site {
	b.Helper()
	dir := stack.TempDir(b, name)
	conf := filepath.Join(dir, "moat.toml")
	body := fmt.Sprintf("[milter]\nlisten = [\"unix:%s\"]\nsocket_mode = \"0666\"\nspool_dir = %q\nspool_memory = 1048576\n\n"+
		"[log]\nlevel = \"info\"\n\n[policy]\nauthserv_id = \"mx.moat.test\"\n\n%s", filepath.Join(dir, "moat.sock"), dir, table)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "moat.sock")
	m := stack.StartMoat(b, conf, "unix:"+sock)
	pf := stack.StartPostfix(b, stack.PostfixOptions{Milter: "unix:" + sock, Mailboxes: []string{attachtest.Rcpt}, Discard: true, ExtraMain: extraMain})
	return site{m, pf}
}

func sendOne(b *testing.B, addr string, m []byte) time.Duration {
	b.Helper()
	start := time.Now()
	if res := stack.SendMail(b, addr, "client.example", attachtest.Sender, []string{attachtest.Rcpt}, m); !res.OK() {
		b.Fatalf("refused: %v", res)
	}
	return time.Since(start)
}

func median(xs []time.Duration) time.Duration {
	s := append([]time.Duration(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func BenchmarkPostfixCost(b *testing.B) {
	stack.Need(b, "postfix")
	big := map[string]string{"message_size_limit": strconv.Itoa(200 << 20)}
	with := startSite(b, "attach-bench-with", "[checks.attachments]\ndry_run = true\n", big)
	without := startSite(b, "attach-bench-without", "[checks.attachments]\nenabled = false\n", big)
	msgs := attachtest.Mixed(100)
	for i := 0; i < b.N; i++ {
		for _, m := range msgs[:10] { // warm up: Postfix processes forked
			sendOne(b, with.postfix.Addr, m)
			sendOne(b, without.postfix.Addr, m)
		}
		var tw, to []time.Duration
		for r := 0; r < 3; r++ {
			for j, m := range msgs {
				if (r+j)%2 == 0 {
					tw = append(tw, sendOne(b, with.postfix.Addr, m))
					to = append(to, sendOne(b, without.postfix.Addr, m))
				} else {
					to = append(to, sendOne(b, without.postfix.Addr, m))
					tw = append(tw, sendOne(b, with.postfix.Addr, m))
				}
			}
		}
		mw, mo := median(tw), median(to)
		b.ReportMetric(mw.Seconds()*1000, "ms/msg_with")
		b.ReportMetric(mo.Seconds()*1000, "ms/msg_without")
		b.ReportMetric(mw.Seconds()/mo.Seconds(), "ratio")
		b.Logf("%d messages x 3 rounds through Postfix + moat: median %v with the attachments check, %v with no check: ratio %.2f",
			len(msgs), mw.Round(10*time.Microsecond), mo.Round(10*time.Microsecond), mw.Seconds()/mo.Seconds())
	}
	if !strings.Contains(with.moat.Log(), "attachments=") {
		b.Fatalf("the check did not run:\n%s", with.moat.Log())
	}
}

func BenchmarkRSS50MB1000Parts(b *testing.B) {
	stack.Need(b, "postfix")
	s := startSite(b, "attach-bench-rss", "[checks.attachments]\n", map[string]string{"message_size_limit": strconv.Itoa(200 << 20)})
	msg := attachtest.Big(50<<20, 1000)
	pid := s.moat.Pid()
	for i := 0; i < b.N; i++ {
		sendOne(b, s.postfix.Addr, attachtest.Mixed(1)[0]) // warm up
		time.Sleep(500 * time.Millisecond)
		rss, err := stack.StartRSSPeak(pid)
		if err != nil {
			b.Fatal(err)
		}
		base := rss.Base
		elapsed := sendOne(b, s.postfix.Addr, msg)
		peak := rss.Stop()
		for deadline := time.Now().Add(10 * time.Second); strings.Count(s.moat.Log(), `checks="attachments=clean"`) < 2*(i+1); {
			if time.Now().After(deadline) {
				b.Fatalf("the big message was not checked clean:\n%s", s.moat.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
		growth := float64(peak-base) / 1024
		b.ReportMetric(float64(base)/1024, "base_RSS_MiB")
		b.ReportMetric(float64(peak)/1024, "peak_RSS_MiB")
		b.ReportMetric(growth, "growth_MiB")
		b.Logf("moat RSS %.1f MiB before, %.1f MiB at peak while a %d MB message of 1000 parts passed in %v: growth %.1f MiB (target < 16)",
			float64(base)/1024, float64(peak)/1024, len(msg)>>20, elapsed.Round(time.Millisecond), growth)
	}
}
