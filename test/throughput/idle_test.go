package throughput

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/moatmail/moat/scanners/clamd"
	"github.com/moatmail/moat/scanners/servers"
	"github.com/moatmail/moat/test/stack"
)

// instream scans msg once on clamd's unix socket and fails unless clamd finds it clean.
func instream(ctx context.Context, socket string, msg []byte) error {
	res, err := clamd.Instream(ctx, servers.Server{Network: "unix", Addr: socket}, 2*time.Second, bytes.NewReader(msg))
	if err != nil {
		return err
	}
	if res.Infected {
		return fmt.Errorf("clamd found %s in the bench message", res.Virus)
	}
	return nil
}

// idleSessions is how many milter sessions BenchmarkIdleSessions holds open.
const idleSessions = 1000

// openIdle opens n milter sessions on moat's unix socket, each negotiated and past the connect stage, the way
// an MTA holds a session while its SMTP client is slow; they stay idle until closed.
func openIdle(b *testing.B, socket string, n int) []*gomilter.ClientSession {
	out := make([]*gomilter.ClientSession, 0, n)
	for i := 0; i < n; i++ {
		s, err := gomilter.NewClient("unix", socket).Session(gomilter.NewMacroBag())
		if err != nil {
			b.Fatalf("idle session %d: %v", i, err)
		}
		if _, err := s.Conn("idle.example.org", gomilter.FamilyInet, uint16(20000+i%40000), "192.0.2.10"); err != nil {
			b.Fatalf("idle session %d: connect: %v", i, err)
		}
		out = append(out, s)
	}
	return out
}

// BenchmarkIdleSessions holds 1,000 idle milter sessions open on moat (no checks, unix socket) and measures
// moat's RSS with them, and the Postfix message rate through the same moat with them as a ratio to without
// (interleaved, median of three). Targets: RSS <= 256 MiB; ratio about 1 (new sessions answered at full speed).
func BenchmarkIdleSessions(b *testing.B) {
	stack.Need(b, "postfix", "smtp-source")
	load := stack.DefaultLoad
	for i := 0; i < b.N; i++ {
		t := moatWith("", "unix")(b)
		socket := strings.TrimPrefix(t.milter, "unix:")
		addr := load.StartPostfix(b, t.milter).Addr
		load.Warm(b, []string{addr})
		rssBefore, err := stack.RSSKiB(t.moat.Pid())
		if err != nil {
			b.Fatal(err)
		}
		var without, with []float64
		var rssIdle int64
		for r := 0; r < rounds; r++ {
			without = append(without, load.Rate(b, addr))
			idle := openIdle(b, socket, idleSessions)
			if rss, err := stack.RSSKiB(t.moat.Pid()); err == nil && rss > rssIdle {
				rssIdle = rss
			}
			with = append(with, load.Rate(b, addr))
			if rss, err := stack.RSSKiB(t.moat.Pid()); err == nil && rss > rssIdle {
				rssIdle = rss
			}
			for _, s := range idle {
				_ = s.Close()
			}
		}
		ratio := median(with) / median(without)
		b.ReportMetric(float64(rssIdle)/1024, "rss_MiB_with_1000_idle")
		b.ReportMetric(ratio, "rate_with/without_idle")
		b.Logf("\nmoat RSS: %.1f MiB before, %.1f MiB with %d idle sessions (target <= 256 MiB)\n"+
			"msgs/s without idle sessions %.0f %v, with %.0f %v: ratio %.2f (target about 1)",
			float64(rssBefore)/1024, float64(rssIdle)/1024, idleSessions, median(without), without, median(with), with, ratio)
	}
}
