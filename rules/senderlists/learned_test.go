package senderlists

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/store"
)

func learnedCheck(t *testing.T, requireProof bool) *Check {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "moat.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.LearnSender(context.Background(), "Friend@Remote.example", "operator", time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	f, err := config.Parse("moat.toml", []byte("[checks.spf]\n[checks.dkim]\n[checks.senderlists]\nlearned = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Learned, cfg.LearnedRequireProof = true, requireProof
	c, err := New(f.Section("checks.senderlists"), cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLearned: a learned sender is white-listed only with SPF pass for its domain or an aligned DKIM pass;
// without proof nothing changes and the finding says why.
func TestLearned(t *testing.T) {
	c := learnedCheck(t, true)
	ctx := context.Background()
	for _, tc := range []struct {
		name, from, spf, spfDomain, dkim string
		rcptWhite, eomWhite              bool
		eomReason                        string
	}{
		{"spf pass", "friend@remote.example", "pass", "remote.example", "", true, true, ReasonWhitelist},
		{"aligned dkim, known at end of message", "friend@remote.example", "fail", "remote.example", "mail.remote.example", false, true, ReasonWhitelist},
		{"forged: spf fail", "friend@remote.example", "fail", "remote.example", "", false, false, "learned-unproven-spf-fail-no-aligned-dkim"},
		{"spf pass of another domain", "friend@remote.example", "pass", "evil.example", "evil.example", false, false, "learned-unproven-spf-pass-no-aligned-dkim"},
		{"not learned", "other@remote.example", "pass", "remote.example", "", false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := policy.NewSession()
			s.From, _ = addr.Parse(tc.from)
			rcpt, _ := addr.Parse("alice@moat.test")
			r := &policy.Recipient{Addr: rcpt}
			s.Rcpts = []*policy.Recipient{r}
			s.Set(policy.FactSPFResult, tc.spf)
			s.Set(policy.FactSPFDomain, tc.spfDomain)
			rf := c.Rcpt(ctx, s, r)
			if got := len(rf) > 0 && rf[0].Verdict == policy.Whitelist; got != tc.rcptWhite {
				t.Fatalf("RCPT: %+v, want white-listed %v", rf, tc.rcptWhite)
			}
			if tc.rcptWhite {
				return
			}
			s.Set(policy.FactDKIMPassDomains, tc.dkim)
			fs := c.Message(ctx, s, nil)
			reason := ""
			if len(fs) > 0 {
				reason = fs[0].Reason
			}
			if white := len(fs) > 0 && fs[0].Verdict == policy.Whitelist; white != tc.eomWhite || reason != tc.eomReason {
				t.Fatalf("EOM: %+v, want white-listed %v, reason %q", fs, tc.eomWhite, tc.eomReason)
			}
			if tc.eomWhite && !strings.Contains(fs[0].AddHeaders[0].Value, "source=learned") {
				t.Fatalf("header %+v, want source=learned", fs[0].AddHeaders)
			}
		})
	}
	// learned_require_proof = false: the learned sender wins at RCPT without proof.
	c = learnedCheck(t, false)
	s := policy.NewSession()
	s.From, _ = addr.Parse("friend@remote.example")
	r := &policy.Recipient{Addr: addr.Address{Local: "alice", Domain: "moat.test"}}
	if rf := c.Rcpt(ctx, s, r); len(rf) == 0 || rf[0].Verdict != policy.Whitelist {
		t.Fatalf("without required proof: %+v", rf)
	}
}
