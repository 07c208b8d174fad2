package spamd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/scanners/servers"
	"github.com/moatmail/moat/scanners/spamc"
	"github.com/moatmail/moat/test/stack"
)

func hamMessage(i int) []byte {
	return []byte(fmt.Sprintf("From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: minutes of meeting %d\r\n"+
		"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <ham-%d-%d@example.org>\r\n\r\n"+
		"Hi Bob,\r\n\r\nhere are the minutes of meeting number %d. We agreed to move the review to Thursday\r\n"+
		"and to keep the budget as it is. Carol will send the slides.\r\n\r\nAlice\r\n", i, i, time.Now().UnixNano(), i))
}

func spamMessage(i int) []byte {
	return []byte(fmt.Sprintf("From: Winner <lottery@prize.example>\r\nTo: bob@example.net\r\nSubject: You won %d dollars\r\n"+
		"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <spam-%d-%d@prize.example>\r\n\r\n"+
		"Congratulations! Claim your prize of %d dollars now, cheap viagra, casino bonus, click here.\r\n", i, i, time.Now().UnixNano(), i))
}

var magicCount = regexp.MustCompile(`(?m)^0\.000\s+0\s+(\d+)\s+0\s+non-token data: nspam$`)
var magicHam = regexp.MustCompile(`(?m)^0\.000\s+0\s+(\d+)\s+0\s+non-token data: nham$`)

func bayesCounts(t *testing.T, s *stack.Spamd) (nspam, nham int) {
	t.Helper()
	out := s.DumpMagic(t)
	if m := magicCount.FindStringSubmatch(out); m != nil {
		nspam, _ = strconv.Atoi(m[1])
	}
	if m := magicHam.FindStringSubmatch(out); m != nil {
		nham, _ = strconv.Atoi(m[1])
	}
	return nspam, nham
}

// Learning with TELL changes spamd's Bayes database, as sa-learn --dump magic shows.
func TestRealSpamdLearn(t *testing.T) {
	s := stack.StartSpamd(t)
	dir := t.TempDir()
	var spamFiles, hamFiles []string
	for i := 0; i < 3; i++ {
		p := filepath.Join(dir, fmt.Sprintf("spam%d.eml", i))
		os.WriteFile(p, spamMessage(i), 0o644)
		spamFiles = append(spamFiles, p)
		p = filepath.Join(dir, fmt.Sprintf("ham%d.eml", i))
		os.WriteFile(p, hamMessage(i), 0o644)
		hamFiles = append(hamFiles, p)
	}
	f, err := config.Parse("moat.toml", []byte(fmt.Sprintf("[checks.spamd]\nservers = [\"tcp:%s\"]\ntimeout = \"30s\"\n", s.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFrom(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	spam0, ham0 := bayesCounts(t, s)

	learn := func(class string, files []string) {
		t.Helper()
		res, err := Learn(ctx, cfg, class, files)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil || !r.Changed {
				t.Fatalf("learn %s %s: changed=%v err=%v", class, r.Path, r.Changed, r.Err)
			}
		}
	}
	learn("spam", spamFiles)
	learn("ham", hamFiles)
	spam1, ham1 := bayesCounts(t, s)
	if spam1 != spam0+3 || ham1 != ham0+3 {
		t.Fatalf("Bayes nspam %d -> %d, nham %d -> %d; want +3 each\n%s", spam0, spam1, ham0, ham1, s.DumpMagic(t))
	}
	learn("forget", spamFiles[:1])
	spam2, _ := bayesCounts(t, s)
	if spam2 != spam1-1 {
		t.Fatalf("forget: nspam %d -> %d, want -1", spam1, spam2)
	}
	if _, err := Learn(ctx, cfg, "eggs", spamFiles); err == nil {
		t.Fatal("Learn accepted class eggs")
	}
	res, _ := Learn(ctx, cfg, "spam", []string{filepath.Join(dir, "missing.eml")})
	if len(res) != 1 || res[0].Err == nil {
		t.Fatalf("learning a missing file: %+v", res)
	}
}

// Failover to a real spamd from a first server answering EX_TEMPFAIL, and from one that never answers with
// the default configuration (no attempt_timeout) and a 4 s deadline.
func TestRealSpamdFailover(t *testing.T) {
	s := stack.StartSpamd(t)
	live := servers.Server{Network: "tcp", Addr: s.Addr}
	tempfail := startFakeSpamd(t, func(fakeRequest) string { return "SPAMD/1.5 75 EX_TEMPFAIL\r\n" })
	silent := startFakeSpamd(t, nil, silentSpamd)
	gtube := []byte("From: <a@example.org>\r\nSubject: test\r\n\r\n" + stack.GTUBE + "\r\n")
	for _, first := range []*fakeSpamd{tempfail, silent} {
		c := spamc.NewClient([]servers.Server{first.Srv, live}, spamc.ClientOptions{})
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		res, err := c.Check(ctx, spamc.CmdSymbols, "", spamc.BytesBody(gtube))
		cancel()
		if err != nil || res.Server != live || !res.Spam || !slices.Contains(res.Symbols, "GTUBE") {
			t.Fatalf("first %v: %+v, %v; want GTUBE from the real spamd", first.Srv, res, err)
		}
		if _, down := c.Down()[first.Srv.String()]; !down || len(c.Down()) != 1 {
			t.Fatalf("down = %v, want only %v", c.Down(), first.Srv)
		}
	}
}
