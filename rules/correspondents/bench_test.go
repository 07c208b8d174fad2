package correspondents_test

// Run by `make bench`: go test -run '^$' -bench . ./rules/correspondents/
//
// BenchmarkRecording: authenticated outbound messages (MAIL, three remote RCPTs, header, end of message)
// through the engine with the correspondents check and with no check, in the same run, over SQLite and over
// a real redis-server. Reports the time the SMTP session waits per message with and without the check and
// their ratio, and the ratio including the background writes (until the store holds the run's last record).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/correspondents"
	"github.com/moatmail/moat/store"
	"github.com/moatmail/moat/test/stack"
)

const benchMsgs = 500

func BenchmarkRecording(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchRecording(b, fmt.Sprintf("[store]\npath = %q\n", filepath.Join(b.TempDir(), "moat.db")))
	})
	b.Run("redis", func(b *testing.B) {
		srv := stack.StartRedis(b)
		var p [6]byte
		_, _ = rand.Read(p[:])
		benchRecording(b, fmt.Sprintf("[store]\nbackend = \"redis\"\nredis_addr = %q\nredis_prefix = \"bench:%s:\"\n", srv.Addr, hex.EncodeToString(p[:])))
	})
}

func benchRecording(b *testing.B, storeTOML string) {
	base := policytest.Policy + storeTOML
	without := policytest.Engine(b, base)
	with := policytest.Engine(b, base+"[checks.correspondents]\nlocal_domains = [\"local.example\"]\n")
	f, err := config.Parse("bench.toml", []byte(base))
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Load(context.Background(), f)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cs, _ := store.CorrespondentsOf(st)
	ctx := context.Background()
	seq := 0
	body := policytest.Msg("Subject: bench\r\n\r\nhello\r\n")
	// run sends benchMsgs messages and returns the time the sessions waited and the name of the last
	// recipient's key, for waiting on the background writer.
	run := func(e *policy.Engine) (time.Duration, string, string) {
		var user, key string
		start := time.Now()
		for i := 0; i < benchMsgs; i++ {
			seq++
			user = fmt.Sprintf("user%d@local.example", seq%50)
			s := policy.NewSession()
			s.Auth.Authen = "user"
			e.Mail(ctx, s, user, "")
			for r := 0; r < 3; r++ {
				key = fmt.Sprintf("r%d-%d@remote%d.example", seq, r, seq%20)
				e.Rcpt(ctx, s, key, "")
			}
			s.Headers = []policy.Header{{Name: "Message-ID", Value: fmt.Sprintf(" <%d@local.example>", seq)}}
			e.Headers(ctx, s)
			if out := e.EOM(ctx, s, body); out.Action != policy.ActAccept {
				b.Fatalf("EOM: %v", out.Decision)
			}
		}
		return time.Since(start), correspondents.UserKey(user), correspondents.AddressKey(key)
	}
	drain := func(user, key string) time.Duration {
		start := time.Now()
		for {
			hit, err := cs.LookupCorrespondents(ctx, user, []string{key}, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			if hit[0] {
				return time.Since(start)
			}
			if time.Since(start) > time.Minute {
				b.Fatal("the last record never reached the store")
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	// Warm up both.
	run(without)
	_, u, k := run(with)
	drain(u, k)
	var tWith, tWithout, tDrain time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Interleaved, so that the machine's noise hits both alike.
		d, _, _ := run(without)
		tWithout += d
		d, u, k := run(with)
		tWith += d
		tDrain += drain(u, k)
	}
	n := float64(b.N * benchMsgs)
	b.ReportMetric(float64(tWith.Microseconds())/n, "us/msg_with")
	b.ReportMetric(float64(tWithout.Microseconds())/n, "us/msg_without")
	b.ReportMetric(tWith.Seconds()/tWithout.Seconds(), "ratio")
	b.ReportMetric((tWith+tDrain).Seconds()/tWithout.Seconds(), "ratio_with_writes")
	b.Logf("%d outbound messages of 3 remote recipients: session waits %.1f us/msg with the check, %.1f us/msg without: %.2fx; "+
		"with the background writes drained: %.2fx", b.N*benchMsgs, float64(tWith.Microseconds())/n, float64(tWithout.Microseconds())/n,
		tWith.Seconds()/tWithout.Seconds(), (tWith+tDrain).Seconds()/tWithout.Seconds())
}
