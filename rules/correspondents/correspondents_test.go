package correspondents

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/store"
)

var t0 = time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)

func newCheck(t *testing.T, mod func(*Config)) (*Check, store.Store) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "moat.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := DefaultConfig()
	cfg.LocalDomains = []string{"local.test", ".sub.local.test"}
	if mod != nil {
		mod(&cfg)
	}
	cs, _ := store.CorrespondentsOf(st)
	c := New(cfg, cs, nil, func() time.Time { return t0 })
	t.Cleanup(func() { c.Close() })
	return c, st
}

type msg struct {
	from, auth string
	rcpts      []string
	headers    []policy.Header
	facts      map[string]string
}

func session(t *testing.T, m msg) *policy.Session {
	t.Helper()
	s := policy.NewSession()
	from, err := addr.Parse(m.from)
	if err != nil {
		t.Fatal(err)
	}
	s.From, s.Auth.Authen, s.Headers = from, m.auth, m.headers
	for _, r := range m.rcpts {
		a, err := addr.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		s.Rcpts = append(s.Rcpts, &policy.Recipient{Addr: a})
	}
	for k, v := range m.facts {
		s.Set(k, v)
	}
	return s
}

// send records an outbound message from alice and waits until the writer wrote it.
func send(t *testing.T, c *Check, rcpts []string, msgID string) policy.Finding {
	t.Helper()
	s := session(t, msg{from: "Alice@Local.test", auth: "alice", rcpts: rcpts,
		headers: []policy.Header{{Name: "Message-ID", Value: " <" + msgID + ">"}}})
	fs := c.Message(context.Background(), s, nil)
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return fs[0]
}

var spfPass = map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: "remote.example"}

func TestRecordAndMatch(t *testing.T) {
	c, _ := newCheck(t, nil)
	if f := send(t, c, []string{"bob@remote.example", "colleague@local.test"}, "out-1@local.test"); f.Status != StatusRecorded || f.Detail != "keys=3" {
		t.Fatalf("outbound: %+v, want recorded with 3 keys (address, domain, Message-ID)", f)
	}
	ctx := context.Background()
	cases := []struct {
		name, from string
		facts      map[string]string
		headers    []policy.Header
		rcptMark   bool // RCPT: greylisting is to skip the recipient
		status     policy.Status
		score      float64
		fact       string // FactCorrespondent
	}{
		{"address with spf", "BOB@remote.example", spfPass, nil, true, policy.StatusPass, -3, "yes"},
		{"address, spf fail", "bob@remote.example", map[string]string{policy.FactSPFResult: "fail", policy.FactSPFDomain: "remote.example"},
			nil, false, StatusUnproven, 0, "unproven-spf-fail-no-aligned-dkim"},
		{"address, spf pass of another domain", "bob@remote.example", map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: "other.example"},
			nil, false, StatusUnproven, 0, "unproven-spf-pass-no-aligned-dkim"},
		{"address, aligned dkim", "bob@remote.example", map[string]string{policy.FactDKIMPassDomains: "mail.other.example,remote.example"},
			nil, false, policy.StatusPass, -3, "yes"},
		{"address, unaligned dkim", "bob@remote.example", map[string]string{policy.FactDKIMPassDomains: "other.example"},
			nil, false, StatusUnproven, 0, "unproven-spf-none-no-aligned-dkim"},
		{"domain only", "carol@remote.example", spfPass, nil, true, policy.StatusPass, -1, "yes"},
		{"stranger", "eve@elsewhere.example", map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: "elsewhere.example"},
			nil, false, StatusNotMatched, 0, ""},
		// The Message-ID was sent to bob only: a third party quoting it gains nothing, proven or not.
		{"stranger replying with spf", "dan@thread.example", map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: "thread.example"},
			[]policy.Header{{Name: "In-Reply-To", Value: " <out-1@local.test>"}}, false, StatusNotMatched, 0, ""},
		{"stranger replying in References, no proof", "dan@thread.example", nil,
			[]policy.Header{{Name: "References", Value: " <a@x> (comment)\n <out-1@local.test>"}}, false, StatusNotMatched, 0, ""},
		{"stranger naming an unknown Message-ID", "dan@thread.example", map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: "thread.example"},
			[]policy.Header{{Name: "In-Reply-To", Value: " <forged@local.test>"}}, false, StatusNotMatched, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := session(t, msg{from: tc.from, rcpts: []string{"alice@local.test"}, facts: tc.facts, headers: tc.headers})
			rf := c.Rcpt(ctx, s, s.Rcpts[0])
			if rf[0].Correspondent != tc.rcptMark {
				t.Errorf("RCPT: %+v, want Correspondent=%v", rf[0], tc.rcptMark)
			}
			f := c.Message(ctx, s, nil)[0]
			if f.Status != tc.status || f.Score != tc.score {
				t.Errorf("EOM: %+v, want status %s score %v", f, tc.status, tc.score)
			}
			if got := s.Get(policy.FactCorrespondent); got != tc.fact {
				t.Errorf("fact %q, want %q", got, tc.fact)
			}
		})
	}
	// Another local user never wrote to bob.
	s := session(t, msg{from: "bob@remote.example", rcpts: []string{"zoe@local.test"}, facts: spfPass})
	if f := c.Message(ctx, s, nil)[0]; f.Status != StatusNotMatched || f.Score != 0 {
		t.Fatalf("zoe: %+v", f)
	}
	// Two recipients: the message scores only when both are correspondents.
	s = session(t, msg{from: "bob@remote.example", rcpts: []string{"alice@local.test", "zoe@local.test"}, facts: spfPass})
	if f := c.Message(ctx, s, nil)[0]; f.Score != 0 {
		t.Fatalf("alice and zoe: %+v, want no score", f)
	}
}

func TestDomainsOff(t *testing.T) {
	c, _ := newCheck(t, func(cfg *Config) { cfg.Domains = false })
	send(t, c, []string{"bob@remote.example"}, "x@local.test")
	s := session(t, msg{from: "carol@remote.example", rcpts: []string{"alice@local.test"}, facts: spfPass})
	if f := c.Rcpt(context.Background(), s, s.Rcpts[0])[0]; f.Correspondent {
		t.Fatalf("domain match with domains = false: %+v", f)
	}
	if f := c.Message(context.Background(), s, nil)[0]; f.Status != StatusNotMatched {
		t.Fatalf("domain match with domains = false: %+v", f)
	}
}

func TestNoAddressInClear(t *testing.T) {
	c, st := newCheck(t, nil)
	send(t, c, []string{"bob@remote.example"}, "secret-id@local.test")
	cs, _ := store.CorrespondentsOf(st)
	es, err := cs.CorrespondentEntries(context.Background(), UserKey("alice@local.test"), t0)
	rs, err2 := cs.CorrespondentEntries(context.Background(), RepliesKey("alice@local.test"), t0)
	if err != nil || err2 != nil || len(es) != 2 || len(rs) != 1 {
		t.Fatalf("entries %v, %v; replies %v, %v: want the address and domain, and the Message-ID apart", es, err, rs, err2)
	}
	es = append(es, rs...)
	for _, e := range es {
		for _, clear := range []string{"bob", "remote", "secret", "alice"} {
			if strings.Contains(e.Key, clear) {
				t.Fatalf("key %q holds %q in clear", e.Key, clear)
			}
		}
	}
	if UserKey("Alice@local.test") != UserKey("alice@LOCAL.test") || UserKey("a@b.example") == RepliesKey("a@b.example") {
		t.Fatal("user keys differ by case")
	}
}

func TestOutboundSkipped(t *testing.T) {
	c, _ := newCheck(t, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		m      msg
		reason string
	}{
		{"sender not local", msg{from: "relay@customer.example", auth: "x", rcpts: []string{"bob@remote.example"}}, "sender-not-local"},
		{"only local recipients", msg{from: "alice@local.test", auth: "alice", rcpts: []string{"zoe@x.sub.local.test"}}, "no-remote-recipient"},
	} {
		if f := c.Message(ctx, session(t, tc.m), nil)[0]; f.Reason != tc.reason {
			t.Errorf("%s: %+v, want reason %s", tc.name, f, tc.reason)
		}
	}
	// moat scan (read-only) records nothing.
	s := session(t, msg{from: "alice@local.test", auth: "alice", rcpts: []string{"bob@remote.example"}})
	s.ReadOnly = true
	c.Message(ctx, s, nil)
	c.Flush(ctx)
	in := session(t, msg{from: "bob@remote.example", rcpts: []string{"alice@local.test"}, facts: spfPass})
	if f := c.Message(ctx, in, nil)[0]; f.Status != StatusNotMatched {
		t.Fatalf("read-only outbound was recorded: %+v", f)
	}
}

func TestLocal(t *testing.T) {
	c, _ := newCheck(t, nil)
	for d, want := range map[string]bool{"local.test": true, "LOCAL.TEST.": true, "a.local.test": false, "sub.local.test": false,
		"x.sub.local.test": true, "y.x.sub.local.test": true, "remote.example": false, "": false} {
		if got := c.Local(d); got != want {
			t.Errorf("Local(%q) = %v, want %v", d, got, want)
		}
	}
}

func TestMessageIDs(t *testing.T) {
	got := messageIDs([]string{" <a@b> <c@d>", "(x) <e@f> junk", "<unclosed", "<>"})
	if strings.Join(got, ",") != "a@b,c@d,e@f" {
		t.Fatalf("messageIDs = %q", got)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ table, key string }{
		{"", "local_domains"},
		{`local_domains = ["local.test"]` + "\nexpiry = \"0s\"", "expiry"},
		{`local_domains = ["local.test"]` + "\nmax_per_user = 0", "max_per_user"},
		{`local_domains = ["local.test"]` + "\nscore = 2.0", "score"},
		{`local_domains = ["not a domain"]`, "local_domains"},
		{`local_domains = ["local.test"]` + "\nbogus = 1", "bogus"},
	} {
		err := policytest.BuildError(t, policytest.Policy+"[store]\npath = \""+filepath.Join(t.TempDir(), "m.db")+"\"\n[checks.correspondents]\n"+tc.table+"\n")
		if err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), policytest.FileName) {
			t.Errorf("table %q: error %v, want one naming %s and the file", tc.table, err, tc.key)
		}
	}
}

// TestExampleConfig: example.toml (with the store's) is a valid configuration.
func TestExampleConfig(t *testing.T) {
	var data []byte
	for _, p := range []string{"../../store/example.toml", "example.toml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data = append(append(data, b...), '\n')
	}
	t.Chdir(t.TempDir()) // the example's store is ./moat.db
	f, err := config.Parse("example.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.Build(f, nil, policytest.Services())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Retire()
	if fmt.Sprint(e.Checks()) != "[correspondents]" {
		t.Fatalf("checks %v", e.Checks())
	}
}

// forgetAddresses drops alice's addresses and domains from the store, leaving her sent Message-IDs, so that
// only a reply can match.
func forgetAddresses(t *testing.T, st store.Store) {
	t.Helper()
	cs, _ := store.CorrespondentsOf(st)
	if _, err := cs.ForgetCorrespondents(context.Background(), UserKey("alice@local.test"), nil); err != nil {
		t.Fatal(err)
	}
}

func replyTo(id string) []policy.Header {
	return []policy.Header{{Name: "In-Reply-To", Value: " <" + id + ">"}}
}

func spfPassFor(a string) map[string]string {
	return map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: addrDomain(a)}
}

// TestReplyBoundToRecipient: a Message-ID counts for a reply from a remote recipient it was sent to, with
// proof, and for nobody else.
func TestReplyBoundToRecipient(t *testing.T) {
	c, st := newCheck(t, nil)
	send(t, c, []string{"bob@remote.example", "Xavier@Other.example"}, "out-1@local.test")
	send(t, c, []string{"xavier@other.example"}, "out-2@local.test")
	forgetAddresses(t, st)
	ctx := context.Background()
	for _, tc := range []struct {
		name, from string
		facts      map[string]string
		headers    []policy.Header
		status     policy.Status
		detail     string
	}{
		{"bob, proven", "bob@remote.example", spfPassFor("bob@remote.example"), replyTo("out-1@local.test"), policy.StatusPass, "match=reply proof=spf"},
		{"bob, unproven", "bob@remote.example", nil, replyTo("out-1@local.test"), StatusUnproven, "match=reply: neither SPF pass nor an aligned DKIM pass for remote.example"},
		{"xavier in References, case apart", "XAVIER@other.example", spfPassFor("x@other.example"),
			[]policy.Header{{Name: "References", Value: " <a@x> <out-1@local.test>"}}, policy.StatusPass, "match=reply proof=spf"},
		{"bob naming a Message-ID sent only to xavier", "bob@remote.example", spfPassFor("bob@remote.example"), replyTo("out-2@local.test"), StatusNotMatched, ""},
		{"dan, proven, naming a Message-ID sent to bob", "dan@thread.example", spfPassFor("dan@thread.example"), replyTo("out-1@local.test"), StatusNotMatched, ""},
		{"bob's domain, another user", "carol@remote.example", spfPassFor("carol@remote.example"), replyTo("out-1@local.test"), StatusNotMatched, ""},
	} {
		s := session(t, msg{from: tc.from, rcpts: []string{"alice@local.test"}, facts: tc.facts, headers: tc.headers})
		f := c.Message(ctx, s, nil)[0]
		if f.Status != tc.status || tc.detail != "" && f.Detail != tc.detail {
			t.Errorf("%s: %+v, want %s %q", tc.name, f, tc.status, tc.detail)
		}
		if want := tc.status == policy.StatusPass; want != (f.Score == -3) {
			t.Errorf("%s: score %v", tc.name, f.Score)
		}
	}
	if ReplyKey("<out-1@local.test>", "Bob@remote.example") != ReplyKey("out-1@local.test", "bob@remote.example") ||
		ReplyKey("out-1@local.test", "bob@remote.example") == ReplyKey("out-1@local.test", "dan@remote.example") ||
		!strings.HasSuffix(ReplyKey("id@x", "bob@remote.example"), ReplyTag("bob@remote.example")) {
		t.Fatal("ReplyKey is not bound to the recipient, or not case-blind")
	}
}

// TestRepliesBoundedApart: a user who writes much to one correspondent keeps that correspondent; the sent
// Message-IDs are bounded in a set of their own, the oldest going first.
func TestRepliesBoundedApart(t *testing.T) {
	c, st := newCheck(t, func(cfg *Config) { cfg.MaxPerUser = 3 })
	tick := t0
	c.now = func() time.Time { tick = tick.Add(time.Second); return tick }
	send(t, c, []string{"old@friend.example"}, "first@local.test")
	for i := 0; i < 10; i++ {
		send(t, c, []string{"bob@remote.example"}, fmt.Sprintf("m%d@local.test", i))
	}
	ctx := context.Background()
	if f := c.Message(ctx, session(t, msg{from: "old@friend.example", rcpts: []string{"alice@local.test"},
		facts: spfPassFor("old@friend.example")}), nil)[0]; f.Status != policy.StatusPass {
		t.Fatalf("old@friend.example: %+v: the address is to be kept, the IDs do not count against it", f)
	}
	forgetAddresses(t, st)
	for _, tc := range []struct {
		from, inReplyTo string
		want            policy.Status
	}{
		{"bob@remote.example", "m9@local.test", policy.StatusPass},
		{"bob@remote.example", "m0@local.test", StatusNotMatched}, // pushed out of the bound of 3
	} {
		facts := map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: addrDomain(tc.from)}
		var hs []policy.Header
		if tc.inReplyTo != "" {
			hs = []policy.Header{{Name: "In-Reply-To", Value: " <" + tc.inReplyTo + ">"}}
		}
		s := session(t, msg{from: tc.from, rcpts: []string{"alice@local.test"}, facts: facts, headers: hs})
		if f := c.Message(ctx, s, nil)[0]; f.Status != tc.want {
			t.Errorf("%s replying to %q: %+v, want %s", tc.from, tc.inReplyTo, f, tc.want)
		}
	}
}

func addrDomain(a string) string { return a[strings.LastIndexByte(a, '@')+1:] }

// failingStore fails every lookup and counts them.
type failingStore struct {
	store.Correspondents
	lookups int
}

func (f *failingStore) LookupCorrespondents(context.Context, string, []string, time.Time) ([]bool, error) {
	f.lookups++
	return nil, fmt.Errorf("connection refused")
}

// TestStoreFailure: a failing store changes nothing (no mark, no score, an error for the log), and is left
// alone for a while after a failure, so that a hung Redis does not hold up every RCPT.
func TestStoreFailure(t *testing.T) {
	fs := &failingStore{}
	tick := t0
	cfg := DefaultConfig()
	cfg.LocalDomains = []string{"local.test"}
	c := New(cfg, fs, nil, func() time.Time { return tick })
	defer c.Close()
	s := session(t, msg{from: "bob@remote.example", rcpts: []string{"alice@local.test"}, facts: spfPass})
	for i := 0; i < 3; i++ {
		f := c.Rcpt(context.Background(), s, s.Rcpts[0])[0]
		if f.Correspondent || f.Status != policy.StatusTempError || f.Err == nil {
			t.Fatalf("rcpt with a failing store: %+v", f)
		}
	}
	if f := c.Message(context.Background(), s, nil)[0]; f.Score != 0 || f.Status != policy.StatusTempError {
		t.Fatalf("eom with a failing store: %+v", f)
	}
	if fs.lookups != 1 {
		t.Fatalf("%d lookups within the backoff, want 1", fs.lookups)
	}
	tick = tick.Add(storeBackoff)
	c.Rcpt(context.Background(), s, s.Rcpts[0])
	if fs.lookups != 2 {
		t.Fatalf("%d lookups after the backoff, want 2", fs.lookups)
	}
}
