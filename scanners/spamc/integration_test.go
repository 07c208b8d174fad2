package spamc

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/moatmail/moat/scanners/servers"
	"github.com/moatmail/moat/test/stack"
)

// The client against the real spamd of test/stack: CHECK with SYMBOLS and REPORT, plain and compressed.
func TestRealSpamd(t *testing.T) {
	s := stack.StartSpamd(t)
	ham := []byte("From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: minutes of the meeting\r\n" +
		"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <ham-1@example.org>\r\n\r\n" +
		"Hi Bob,\r\n\r\nhere are the minutes. We agreed to move the review to Thursday\r\n" +
		"and to keep the budget as it is. Carol will send the slides.\r\n\r\nAlice\r\n")
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			c := NewClient([]servers.Server{{Network: "tcp", Addr: s.Addr}}, ClientOptions{Compress: compress})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			gtube := []byte("From: <a@example.org>\r\nSubject: test\r\n\r\n" + stack.GTUBE + "\r\n")
			res, err := c.Check(ctx, CmdSymbols, "", BytesBody(gtube))
			if err != nil {
				t.Fatal(err)
			}
			if !res.Spam || res.Score < 1000 || !slices.Contains(res.Symbols, "GTUBE") {
				t.Fatalf("GTUBE: %+v", res)
			}
			res, err = c.Check(ctx, CmdSymbols, "", BytesBody(ham))
			if err != nil {
				t.Fatal(err)
			}
			if res.Spam || res.Score >= 5 {
				t.Fatalf("ham: %+v", res)
			}
			rep, err := c.Check(ctx, CmdReport, "", BytesBody(gtube))
			if err != nil || !rep.Spam || !regexp.MustCompile(`GTUBE`).MatchString(rep.Report) {
				t.Fatalf("REPORT: %+v, %v", rep, err)
			}
			if compress && c.noCompress[c.pool.Servers()[0]].Load() {
				t.Fatal("spamd refused zlib: the requests went uncompressed")
			}
		})
	}
}
