package spamd

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/spool"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/scanners/spamc/spamctest"
)

// testCheck stands in for other checks in these unit tests (registered under the "test" name): with
// mode = "whitelist" it white-lists every message at connect, with mode = "reject" it rejects every message
// at end of message (before the scanners run), else it scores 2 points at connect.
type testCheck struct {
	Mode string `toml:"mode"`
}

func (testCheck) Name() string      { return "test" }
func (testCheck) Kind() policy.Kind { return policy.KindAntispam }
func (c testCheck) Connect(context.Context, *policy.Session) []policy.Finding {
	if c.Mode == "whitelist" {
		return []policy.Finding{{Status: "listed", Verdict: policy.Whitelist, Reason: "test-whitelist"}}
	}
	if c.Mode == "reject" {
		return nil
	}
	return []policy.Finding{{Status: "listed", Reason: "test-score", Score: 2, Scored: true, Tests: []string{"TEST_TWO"}}}
}

func (c testCheck) Message(context.Context, *policy.Session, policy.Message) []policy.Finding {
	if c.Mode != "reject" {
		return nil
	}
	return []policy.Finding{{Status: "listed", Verdict: policy.Reject, Reason: "test-reject",
		Reply: policy.Reply{Code: 550, Enhanced: "5.7.1", Text: "Rejected by test"}}}
}

func init() {
	policy.Register("test", func(sec *config.Section, _ *policy.Env) (policy.Check, error) {
		var c testCheck
		return c, sec.Decode(&c)
	})
}

type session struct {
	auth  bool
	rcpts []string
}

func runEngine(t *testing.T, conf string, sess session, msg []byte) (policy.Outcome, *policy.Session) {
	t.Helper()
	e := policytest.Engine(t, conf)
	t.Cleanup(e.Retire)
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	s.Helo = "client.example"
	if sess.auth {
		s.Auth = policy.AuthInfo{Type: "PLAIN", Authen: "alice"}
	}
	e.Connect(ctx, s)
	e.Helo(ctx, s)
	if d := e.Mail(ctx, s, "a@example.org", ""); d.Action != policy.ActContinue {
		t.Fatalf("mail: %+v", d)
	}
	if len(sess.rcpts) == 0 {
		sess.rcpts = []string{"b@example.net"}
	}
	for _, r := range sess.rcpts {
		if _, d := e.Rcpt(ctx, s, r, ""); d.Action != policy.ActContinue {
			t.Fatalf("rcpt: %+v", d)
		}
	}
	s.Headers = []policy.Header{{Name: "Subject", Value: " test"}, {Name: "X-Spam-Flag", Value: " NO"},
		{Name: "X-Spam-Status", Value: " No, score=-100"}}
	e.Headers(ctx, s)
	sp := spool.New(t.TempDir(), 1<<20)
	defer sp.Close()
	sp.Write(msg)
	e.WriteBody(s, msg)
	return e.EOM(ctx, s, sp), s
}

func TestCheckDecisions(t *testing.T) {
	msg := []byte("Subject: test\r\nX-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100\r\n\r\nbody\r\n")
	ham := startFakeSpamd(t, symbolsReply(1.2, "MISSING_DATE,NO_RELAYS"))
	middle := startFakeSpamd(t, symbolsReply(7.5, "BAYES_99,MISSING_DATE"))
	gtube := startFakeSpamd(t, symbolsReply(1000, "GTUBE"))
	broken := startFakeSpamd(t, func(fakeRequest) string { return "SPAMD/1.0 76 Bad header line: oops\r\n" })
	silent := startFakeSpamd(t, nil, silentSpamd)

	const policyTable = "[policy]\ntag_score = 5.0\nreject_score = 10.0\n"
	tests := []struct {
		name       string
		server     *fakeSpamd
		extra      string
		pre        string // tables before [checks.spamd]
		sess       session
		wantAction policy.Action
		wantReply  string
		wantStatus []string // X-Spam-Status values added
		wantFlag   bool
		wantCalls  int
	}{
		{name: "ham", server: ham, wantAction: policy.ActAccept, wantCalls: 1,
			wantStatus: []string{" No, score=1.2 required=5.0 tests=MISSING_DATE,NO_RELAYS"}},
		{name: "between tag and reject", server: middle, wantAction: policy.ActAccept, wantFlag: true, wantCalls: 1,
			wantStatus: []string{" Yes, score=7.5 required=5.0 tests=BAYES_99,MISSING_DATE"}},
		{name: "gtube rejected", server: gtube, wantAction: policy.ActReject, wantCalls: 1,
			wantReply: "550 5.7.1 Message considered spam (score 1000.0) (ref="},
		{name: "failure fails open", server: broken, wantAction: policy.ActAccept, wantCalls: 1,
			wantStatus: []string{" unscanned (spamd error)"}},
		{name: "silent fails open", server: silent, extra: `timeout = "300ms"`, wantAction: policy.ActAccept,
			wantStatus: []string{" unscanned (spamd timeout)"}},
		{name: "failure fails closed", server: broken, extra: `on_failure = "tempfail"`, wantAction: policy.ActTempfail, wantCalls: 1,
			wantReply: "451 4.7.1 Spam scan unavailable"},
		{name: "failure with another score: one X-Spam-Status", server: broken, pre: "[checks.test]\nmode = \"score\"\n",
			wantAction: policy.ActAccept, wantCalls: 1,
			wantStatus: []string{" No, score=2.0 required=5.0 tests=TEST_TWO,SPAMD_UNSCANNED"}},
		{name: "too large", server: ham, extra: `max_size = "10"`, wantAction: policy.ActAccept,
			wantStatus: []string{" unscanned (too large)"}},
		{name: "authenticated skipped", server: gtube, sess: session{auth: true}, wantAction: policy.ActAccept},
		{name: "authenticated scanned when configured", server: gtube, extra: "skip_authenticated = false", sess: session{auth: true},
			wantAction: policy.ActReject, wantCalls: 1},
		{name: "white-listed skipped", server: gtube, pre: "[checks.test]\nmode = \"whitelist\"\n", wantAction: policy.ActAccept},
		{name: "already rejected skipped", server: ham, pre: "[checks.test]\nmode = \"reject\"\n", wantAction: policy.ActReject,
			wantReply: "550 5.7.1 Rejected by test", wantCalls: 0},
		{name: "dry-run rejection still scored", server: ham, pre: "[checks.test]\nmode = \"reject\"\ndry_run = true\n",
			wantAction: policy.ActAccept, wantCalls: 1,
			wantStatus: []string{" No, score=1.2 required=5.0 tests=MISSING_DATE,NO_RELAYS"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(tc.server.Requests())
			conf := fmt.Sprintf("%s%s[checks.spamd]\nservers = [%q]\n%s\n", policyTable, tc.pre, "tcp:"+tc.server.Srv.Addr, tc.extra)
			out, _ := runEngine(t, conf, tc.sess, msg)
			if out.Action != tc.wantAction {
				t.Fatalf("action = %v (%s/%s %s), want %v", out.Action, out.Check, out.Reason, out.Reply, tc.wantAction)
			}
			if calls := len(tc.server.Requests()) - before; tc.server != silent && calls != tc.wantCalls {
				t.Fatalf("spamd called %d times, want %d", calls, tc.wantCalls)
			}
			if tc.wantReply != "" && !strings.HasPrefix(out.Reply.String(), tc.wantReply) {
				t.Fatalf("reply = %q, want prefix %q", out.Reply, tc.wantReply)
			}
			if out.Action != policy.ActAccept {
				return
			}
			if got := policytest.AddedHeaders(out, "X-Spam-Status"); strings.Join(got, "|") != strings.Join(tc.wantStatus, "|") {
				t.Fatalf("X-Spam-Status = %q, want %q", got, tc.wantStatus)
			}
			if got := policytest.AddedHeaders(out, "X-Spam-Flag"); (len(got) == 1 && got[0] == " YES") != tc.wantFlag || len(got) > 1 {
				t.Fatalf("X-Spam-Flag = %q, want flag %v", got, tc.wantFlag)
			}
			removed := map[string]bool{}
			for _, r := range out.RemoveHeaders {
				removed[strings.ToLower(r.Name)] = true
			}
			if !removed["x-spam-flag"] || !removed["x-spam-status"] {
				t.Fatalf("forged X-Spam headers not removed: %+v", out.RemoveHeaders)
			}
		})
	}
}

// The finding of an "already rejected" skip names the check that rejected.
func TestAlreadyRejectedFinding(t *testing.T) {
	f := startFakeSpamd(t, symbolsReply(1000, "GTUBE"))
	conf := fmt.Sprintf("[checks.test]\nmode = \"reject\"\n[checks.spamd]\nservers = [%q]\n", "tcp:"+f.Srv.Addr)
	out, s := runEngine(t, conf, session{}, []byte("Subject: x\r\n\r\nb\r\n"))
	got, ok := s.Finding(Name, nil)
	if out.Action != policy.ActReject || out.Check != "test" || !ok || got.Status != policy.StatusSkipped ||
		got.Reason != ReasonSkipped || got.Detail != "already rejected by test" || len(f.Requests()) != 0 {
		t.Fatalf("outcome %v by %s, spamd finding %+v (found %v), %d requests", out.Action, out.Check, got, ok, len(f.Requests()))
	}
}

// With several servers and no attempt_timeout, a silent spamd or one answering EX_TEMPFAIL must not leave
// the message unscored while another server is healthy.
func TestCheckFailsOver(t *testing.T) {
	msg := []byte("Subject: x\r\n\r\nb\r\n")
	ham := startFakeSpamd(t, symbolsReply(1.2, "MISSING_DATE"))
	silent := startFakeSpamd(t, nil, silentSpamd)
	tempfail := startFakeSpamd(t, func(fakeRequest) string { return "SPAMD/1.5 75 EX_TEMPFAIL\r\n" })
	for _, first := range []*fakeSpamd{silent, tempfail} {
		name := "silent"
		if first == tempfail {
			name = "tempfail"
		}
		t.Run(name, func(t *testing.T) {
			conf := fmt.Sprintf("[checks.spamd]\nservers = [%q, %q]\ntimeout = \"2s\"\non_failure = \"tempfail\"\n",
				"tcp:"+first.Srv.Addr, "tcp:"+ham.Srv.Addr)
			out, s := runEngine(t, conf, session{}, msg)
			got, _ := s.Finding(Name, nil)
			if out.Action != policy.ActAccept || !got.Scored || got.Score != 1.2 {
				t.Fatalf("outcome %v %s, spamd finding %+v: want the healthy server's score", out.Action, out.Reply, got)
			}
		})
	}
}

func TestUserHeader(t *testing.T) {
	f := startFakeSpamd(t, symbolsReply(0, "A"))
	tests := []struct {
		name  string
		extra string
		rcpts []string
		want  string
	}{
		{"none", "", nil, ""},
		{"fixed", `user = "filter"`, nil, "filter"},
		{"per domain", "user_per_domain = true", []string{"x@example.net", "y@Example.NET"}, "example.net"},
		{"mixed domains fall back", "user_per_domain = true\nuser = \"filter\"", []string{"x@example.net", "y@example.com"}, "filter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.Requests())
			conf := fmt.Sprintf("[checks.spamd]\nservers = [%q]\n%s\n", "tcp:"+f.Srv.Addr, tc.extra)
			runEngine(t, conf, session{rcpts: tc.rcpts}, []byte("Subject: x\r\n\r\nb\r\n"))
			reqs := f.Requests()[before:]
			if len(reqs) != 1 || reqs[0].Headers["User"] != tc.want {
				t.Fatalf("requests %+v, want User %q", reqs, tc.want)
			}
		})
	}
}

func TestSetupErrors(t *testing.T) {
	tests := []struct{ conf, want string }{
		{"[checks.spamd]\n", "moat.toml:1: checks.spamd.servers: at least one spamd server"},
		{"[checks.spamd]\nservers = [\"spamd\"]\n", "moat.toml:2: checks.spamd.servers[0]"},
		{"[checks.spamd]\nservers = [\"tcp:127.0.0.1:99999\"]\n", "moat.toml:2: checks.spamd.servers[0]: port \"99999\""},
		{"[checks.spamd]\nservers = [\"/s\"]\non_failure = \"reject\"\n", "moat.toml:3: checks.spamd.on_failure"},
		{"[checks.spamd]\nservers = [\"/s\"]\nuser = \"a b\"\n", "moat.toml:3: checks.spamd.user"},
		{"[checks.spamd]\nservers = [\"/s\"]\nmax_size = \"big\"\n", "moat.toml:3: checks.spamd.max_size"},
		{"[checks.spamd]\nservers = [\"/s\"]\nreject_score = 10\n", "moat.toml:3: checks.spamd.reject_score: unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if err := policytest.BuildError(t, tc.conf); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build error = %v, want %q", err, tc.want)
			}
		})
	}
}

// The example in example.toml must be a valid configuration.
func TestExampleConfig(t *testing.T) {
	e := policytest.ExampleEngine(t, "example.toml", nil, Name)
	defer e.Retire()
	if e.Settings.RejectScore != 15 {
		t.Fatalf("reject_score %v, want 15", e.Settings.RejectScore)
	}
}

// The fake spamd of package spamctest, under the names these tests use.
type (
	fakeRequest = spamctest.Request
	fakeSpamd   = spamctest.Fake
)

var (
	startFakeSpamd = spamctest.Start
	silentSpamd    = spamctest.Silent
	symbolsReply   = spamctest.SymbolsReply
)
