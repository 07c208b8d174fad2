package greylist

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/store"
)

// Tests for the review's findings.

// A network that passed auto_whitelist triplets without SPF is not greylisted again when its
// next sender passes SPF.
func TestAutoWhitelistSurvivesSPFPass(t *testing.T) {
	c, clk, _ := newCheck(t, func(cfg *Config) { cfg.AutoWhitelist = 2 })
	for i := 0; i < 2; i++ {
		sv := alice
		sv.from = fmt.Sprintf("sender%c@example.com", 'a'+i)
		wantGreylisted(t, rcpt(t, c, session(t, sv), "bob@example.org"), 300)
		clk.Advance(6 * time.Minute)
		wantPass(t, rcpt(t, c, session(t, sv), "bob@example.org"), ReasonPassed)
		clk.Advance(time.Hour)
	}
	sv := alice
	sv.from = "new@spf.example"
	sv.facts = map[string]string{policy.FactSPFResult: "pass", policy.FactSPFDomain: "spf.example"}
	f := rcpt(t, c, session(t, sv), "bob@example.org")
	wantPass(t, f, ReasonWhitelisted)
	if !strings.Contains(f.Detail, "client=spf:spf.example") {
		t.Fatalf("detail %q: the triplet should still be keyed on the SPF domain", f.Detail)
	}
}

// Normalisation never merges two different people's addresses.
func TestNormalizeMustDiffer(t *testing.T) {
	differ := [][2]string{
		{"john2024@gmail.com", "mary1999@gmail.com"},
		{"12345678@qq.com", "87654321@qq.com"},
		{"a1b2c3d4e5@example.com", "f6e5d4c3b2@example.com"},
		{"alice.smith1985@example.com", "alice.smith1990@example.com"},
		{"team-a1b2@example.com", "team-c3d4@example.com"},
		{"jsmith-2b@example.com", "jsmith-3c@example.com"},
	}
	for _, p := range differ {
		a, _ := addr.Parse(p[0])
		b, _ := addr.Parse(p[1])
		if na, nb := NormalizeSender(a, ""), NormalizeSender(b, ""); na == nb {
			t.Errorf("%q and %q both normalise to %q", p[0], p[1], na)
		}
	}
	// Identifiers after a separator are still masked.
	same := [][2]string{
		{"bounce-1234-5678@example.com", "bounce-9999-1@example.com"},
		{"news.0a1b2c3d4e@example.com", "news.ffee00112233@example.com"},
	}
	for _, p := range same {
		a, _ := addr.Parse(p[0])
		b, _ := addr.Parse(p[1])
		if na, nb := NormalizeSender(a, ""), NormalizeSender(b, ""); na != nb {
			t.Errorf("%q and %q differ: %q vs %q", p[0], p[1], na, nb)
		}
	}
}

// failingStore fails every decision and counts how often it was asked.
type failingStore struct {
	store.Store
	calls atomic.Int32
}

func (f *failingStore) Greylist(context.Context, store.GreyRequest) (store.GreyResult, error) {
	f.calls.Add(1)
	return store.GreyResult{}, errors.New("redis: i/o timeout")
}

// After a store failure the check leaves the store alone for storeBackoff (on_error applies),
// then asks again.
func TestStoreCircuitBreaker(t *testing.T) {
	c, clk, st := newCheck(t, nil)
	fs := &failingStore{Store: st}
	c.st = fs
	for i := 0; i < 5; i++ {
		f := rcpt(t, c, session(t, alice), fmt.Sprintf("u%d@example.org", i))
		if f.Reason != ReasonStoreError || f.Verdict != policy.None || f.Err == nil {
			t.Fatalf("recipient %d: %+v", i, f)
		}
		if i > 0 && !errors.Is(f.Err, errStoreBackoff) {
			t.Fatalf("recipient %d: err %v, want the back-off error", i, f.Err)
		}
	}
	if n := fs.calls.Load(); n != 1 {
		t.Fatalf("the failing store was asked %d times in a row, want 1", n)
	}
	clk.Advance(storeBackoff)
	rcpt(t, c, session(t, alice), "later@example.org")
	if n := fs.calls.Load(); n != 2 {
		t.Fatalf("after the back-off the store was asked %d times in all, want 2", n)
	}
	// A store that works again is used for every recipient.
	c.st = st
	clk.Advance(storeBackoff)
	wantGreylisted(t, rcpt(t, c, session(t, alice), "a@example.org"), 300)
	wantGreylisted(t, rcpt(t, c, session(t, alice), "b@example.org"), 300)
	// A session that went away is not a store failure.
	c.st = fs
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	addr, _ := addr.Parse("gone@example.org")
	s := session(t, alice)
	r := &policy.Recipient{Addr: addr}
	s.Rcpts = append(s.Rcpts, r)
	c.Rcpt(ctx, s, r)
	c.st = st
	wantGreylisted(t, rcpt(t, c, session(t, alice), "c@example.org"), 300)
}

// Per-domain settings are checked at their own key: bad delays, wildcards, names that are
// not domains, and two spellings of one domain.
func TestDomainConfigErrors(t *testing.T) {
	tests := []struct{ name, body, wantErr string }{
		{"delay at its key", "[checks.greylist.domains.\"x.example\"]\n\ndelay = \"3d\"\n",
			"moat.toml:5: checks.greylist.domains.x.example.delay: must be positive and shorter than window"},
		{"wildcard", "[checks.greylist.domains.\"*.example.com\"]\nenabled = false\n",
			"moat.toml:3: checks.greylist.domains.*.example.com: \"*.example.com\": wildcards are not supported"},
		{"not a domain", "[checks.greylist.domains.\"not a domain\"]\nenabled = false\n",
			"moat.toml:3: checks.greylist.domains.not a domain: \"not a domain\" is not a domain name"},
		{"empty label", "[checks.greylist.domains.\"a..example\"]\nenabled = false\n", "is not a domain name"},
		{"duplicate", "[checks.greylist.domains.\"example.org\"]\nenabled = false\n[checks.greylist.domains.\"Example.ORG.\"]\nenabled = true\n",
			"moat.toml:5: checks.greylist.domains.Example.ORG.: same domain as \"example.org\""},
		{"internationalised name accepted", "[checks.greylist.domains.\"bücher.example\"]\nenabled = false\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := policytest.BuildError(t, storeTable(t)+tc.body)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
	// An internationalised key applies to the recipient domain in either form.
	cfg := DefaultConfig()
	off := false
	cfg.Domains = map[string]DomainConfig{"bücher.example": {Enabled: &off}}
	sec := func() *config.Section {
		f, _ := config.Parse("t.toml", []byte("[checks.greylist.domains.\"bücher.example\"]\nenabled = false\n"))
		return f.Section("checks.greylist")
	}()
	dc, err := DecodeConfig(sec)
	if err != nil {
		t.Fatal(err)
	}
	c := New(dc, newStore(t), nil, nil)
	for _, d := range []string{"bücher.example", "xn--bcher-kva.example", "mail.xn--bcher-kva.example"} {
		if enabled, _, _ := c.domain(d); enabled {
			t.Errorf("domain(%q) enabled; want the bücher.example setting", d)
		}
	}
}

// In dry run no X-Greylist claims a delay that did not happen: the first message went
// through, and a later one of the same triplet was never held up.
func TestDryRunNoHeader(t *testing.T) {
	clk := &fakeClock{now: start}
	clock = clk.Now
	defer func() { clock = time.Now }()
	e := policytest.Engine(t, storeTable(t)+"[checks.greylist]\ndry_run = true\n")
	ctx := context.Background()
	for i, wait := range []time.Duration{0, 10 * time.Minute} {
		clk.Advance(wait)
		s := policy.NewSession()
		s.ClientIP = netip.MustParseAddr("192.0.2.10")
		s.Helo = "mx.example.com"
		e.Connect(ctx, s)
		e.Helo(ctx, s)
		e.Mail(ctx, s, "alice@example.com", "")
		if _, d := e.Rcpt(ctx, s, "bob@example.org", ""); d.Action == policy.ActTempfail {
			t.Fatalf("message %d: dry run tempfailed: %+v", i, d)
		}
		s.Headers = []policy.Header{{Name: "Subject", Value: " hi"}}
		e.Headers(ctx, s)
		out := e.EOM(ctx, s, msg("Subject: hi\r\n\r\nbody\r\n"))
		for _, h := range out.AddHeaders {
			if h.Name == HeaderName {
				t.Fatalf("message %d: dry run added %s:%s", i, h.Name, h.Value)
			}
		}
	}
}

// In the command, a relative path is the configuration's, the command never creates the
// database and names the absolute path it looked at; -limit keeps the oldest; IDs are hexadecimal.
func TestCommandPathsAndQueries(t *testing.T) {
	clk := &fakeClock{now: start}
	clock = clk.Now
	defer func() { clock = time.Now }()
	confDir := t.TempDir()
	t.Chdir(t.TempDir())
	f, err := config.Parse(filepath.Join(confDir, "moat.toml"), []byte("[store]\npath = \"grey.db\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out strings.Builder
		err := Command(context.Background(), f, func(ctx context.Context) (store.Store, error) { return store.Load(ctx, f) }, args, &out)
		return out.String(), err
	}
	want := filepath.Join(confDir, "grey.db")
	if _, err := run("list"); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("list without a database: %v, want an error naming %s", err, want)
	}
	if _, err := os.Stat(want); err == nil {
		t.Fatal("the command created the database")
	}
	if _, err := os.Stat("grey.db"); err == nil {
		t.Fatal("the command created a database in the working directory")
	}
	st, err := store.OpenSQLite(context.Background(), want, false)
	if err != nil {
		t.Fatal(err)
	}
	c := New(DefaultConfig(), st, nil, clk.Now)
	for i := 0; i < 5; i++ {
		wantGreylisted(t, rcpt(t, c, session(t, alice), fmt.Sprintf("r%d@example.org", i)), 300)
		clk.Advance(time.Second)
	}
	st.Close()
	out, err := run("list", "-limit", "2")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 || !strings.Contains(lines[1], "r0@example.org") || !strings.Contains(lines[2], "r1@example.org") {
		t.Fatalf("list -limit 2: %v\n%s", err, out)
	}
	if _, err := run("show", "zzzz"); !errors.Is(err, ErrUsage) {
		t.Fatalf("show zzzz: %v, want ErrUsage", err)
	}
	id := store.Triplet{Client: "192.0.2.0/24", Sender: "alice@example.com", Rcpt: "r3@example.org"}.ID()
	if out, err := run("show", strings.ToUpper(id[:6])); err != nil || !strings.Contains(out, "r3@example.org") {
		t.Fatalf("show %s: %v\n%s", id[:6], err, out)
	}
}
