package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
)

// fake checks, registered under real check names (the real packages are not linked into this test binary).
type fake struct {
	name    string
	kind    Kind
	mail    func(*Session) []Finding
	rcpt    func(*Session, *Recipient) []Finding
	connect func(*Session) []Finding
	scan    func(*Session, Message) []Finding
	msg     func(*Session, Message) []Finding
}

func (f *fake) Name() string { return f.name }
func (f *fake) Kind() Kind   { return f.kind }

type fakeConnect struct{ *fake }

func (f fakeConnect) Connect(_ context.Context, s *Session) []Finding { return f.connect(s) }

type fakeMail struct{ *fake }

func (f fakeMail) Mail(_ context.Context, s *Session) []Finding { return f.mail(s) }

type fakeRcpt struct{ *fake }

func (f fakeRcpt) Rcpt(_ context.Context, s *Session, r *Recipient) []Finding { return f.rcpt(s, r) }

type fakeScan struct{ *fake }

func (f fakeScan) Scan(_ context.Context, s *Session, m Message) []Finding { return f.scan(s, m) }
func (f fakeScan) OwnedHeaders() []string                                  { return []string{"X-Virus-Scanned"} }

type fakeMessage struct{ *fake }

func (f fakeMessage) Message(_ context.Context, s *Session, m Message) []Finding { return f.msg(s, m) }

// fakes maps a check name to the check the next Build gets.
var fakes = map[string]Check{}

func init() {
	for _, n := range []string{"relay", "senderlists", "dnsbl", "spf", "greylist", "dmarc", "clamd", "spamd"} {
		Register(n, func(sec *config.Section, env *Env) (Check, error) {
			var c struct {
				Flag        string `toml:"flag"`
				UseResolver bool   `toml:"use_resolver"` // ask the Env for the resolver, as the DNS checks do
				UseStore    bool   `toml:"use_store"`    // ask the Env for the store, as greylisting does
			}
			if err := sec.Decode(&c); err != nil {
				return nil, err
			}
			if c.Flag == "bad" {
				return nil, sec.Errorf("flag", "bad flag")
			}
			if c.UseResolver {
				if _, err := env.Resolver(); err != nil {
					return nil, err
				}
			}
			if c.UseStore {
				if _, err := env.Store(); err != nil {
					return nil, err
				}
			}
			return fakes[sec.Path()[len("checks."):]], nil
		})
	}
}

type memMessage []byte

func (m memMessage) Open() io.Reader { return bytes.NewReader(m) }
func (m memMessage) Size() int64     { return int64(len(m)) }

func mustEngine(t *testing.T, toml string, checks map[string]Check) (*Engine, *bytes.Buffer) {
	t.Helper()
	fakes = checks
	f, err := config.Parse("moat.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	e, err := Build(f, slog.New(slog.NewTextHandler(&logs, nil)), Services{})
	if err != nil {
		t.Fatal(err)
	}
	return e, &logs
}

func newTestSession() *Session {
	s := NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	s.Helo = "client.example"
	return s
}

func TestWhiteListSkipsAntispamButNotVirusScan(t *testing.T) {
	spfRan, spamRan, clamRan := false, false, false
	checks := map[string]Check{
		"senderlists": fakeRcpt{&fake{name: "senderlists", kind: KindAccess, rcpt: func(s *Session, r *Recipient) []Finding {
			if s.From.Domain == "friend.example" {
				return []Finding{{Verdict: Whitelist, Reason: "whitelist"}}
			}
			return nil
		}}},
		"spf": fakeMail{&fake{name: "spf", kind: KindAntispam, mail: func(s *Session) []Finding {
			spfRan = true
			return []Finding{Rejectf(StatusFail, "spf-fail", 550, "5.7.23", "SPF fail")}
		}}},
		"spamd": fakeScan{&fake{name: "spamd", kind: KindAntispam, scan: func(*Session, Message) []Finding {
			spamRan = true
			return []Finding{{Score: 1000, Scored: true}}
		}}},
		"clamd": fakeScan{&fake{name: "clamd", kind: KindVirus, scan: func(*Session, Message) []Finding {
			clamRan = true
			return []Finding{Rejectf("found", "virus", 554, "5.7.1", "Virus found: Eicar")}
		}}},
	}
	e, _ := mustEngine(t, "[checks.senderlists]\n[checks.spf]\n[checks.spamd]\n[checks.clamd]\n[policy]\nreject_score = 5\n", checks)
	s := newTestSession()
	if d := e.Mail(context.Background(), s, "boss@friend.example", ""); d.Action != ActContinue {
		t.Fatalf("mail: %+v (anti-spam verdicts wait for RCPT)", d)
	}
	if !spfRan {
		t.Error("SPF runs at MAIL: the white list is only known at RCPT")
	}
	if _, d := e.Rcpt(context.Background(), s, "me@local.example", ""); d.Action != ActContinue {
		t.Fatalf("rcpt: white-listed sender refused by SPF: %+v", d)
	}
	out := e.EOM(context.Background(), s, memMessage("Subject: x\r\n\r\nbody\r\n"))
	if spamRan {
		t.Error("spamd ran for a white-listed sender")
	}
	if !clamRan || out.Action != ActReject || out.Check != "clamd" {
		t.Errorf("virus scan must still run and reject: ran=%v outcome=%+v", clamRan, out.Decision)
	}

	// A sender that is not white-listed is refused at RCPT by the deferred SPF verdict.
	s2 := newTestSession()
	e.Mail(context.Background(), s2, "x@stranger.example", "")
	if _, d := e.Rcpt(context.Background(), s2, "me@local.example", ""); d.Action != ActReject || d.Reply.Code != 550 || d.Reply.Enhanced != "5.7.23" {
		t.Errorf("rcpt: want the deferred SPF rejection, got %+v", d)
	}
}

func TestPanicInCheckBecomesTempfail(t *testing.T) {
	checks := map[string]Check{
		"relay": fakeRcpt{&fake{name: "relay", kind: KindAccess, rcpt: func(*Session, *Recipient) []Finding { panic("boom") }}},
	}
	e, logs := mustEngine(t, "[checks.relay]\n", checks)
	s := newTestSession()
	e.Mail(context.Background(), s, "a@b.example", "")
	_, d := e.Rcpt(context.Background(), s, "c@d.example", "")
	if d.Action != ActTempfail || d.Reply.Code != 451 || !strings.Contains(d.Reply.Text, "ref="+s.Ref) {
		t.Errorf("got %+v, want a 451 with the ref", d)
	}
	if !strings.Contains(logs.String(), "check panicked") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("the panic must be logged with its value: %s", logs.String())
	}
}

func TestDryRunPerCheckAndGlobal(t *testing.T) {
	refuse := fakeRcpt{&fake{name: "relay", kind: KindAccess, rcpt: func(*Session, *Recipient) []Finding {
		return []Finding{Rejectf(StatusFail, "relay-denied", 550, "5.7.1", "cannot relay")}
	}}}
	for _, toml := range []string{"[checks.relay]\ndry_run = true\n", "[policy]\ndry_run = true\n[checks.relay]\n"} {
		e, logs := mustEngine(t, toml, map[string]Check{"relay": refuse})
		s := newTestSession()
		e.Mail(context.Background(), s, "a@b.example", "")
		_, d := e.Rcpt(context.Background(), s, "c@d.example", "")
		if d.Action != ActContinue || len(d.DryRun) != 1 {
			t.Errorf("%q: got %+v, want continue with a dry-run note", toml, d)
		}
		e.LogMessage(s, d, 0)
		if !strings.Contains(logs.String(), "relay=fail/relay-denied") {
			t.Errorf("%q: summary should show what the dry-run check found: %s", toml, logs.String())
		}
	}
}

func TestEndOfMessagePhasesAndHeaders(t *testing.T) {
	var order []string
	checks := map[string]Check{
		"dmarc": fakeMessage{&fake{name: "dmarc", kind: KindAntispam, msg: func(s *Session, m Message) []Finding {
			order = append(order, "dmarc")
			b, _ := io.ReadAll(m.Open())
			if !bytes.Contains(b, []byte("body")) {
				t.Error("message checker did not get the message")
			}
			return []Finding{{Status: StatusPass, AuthResult: &AuthResult{Method: "dmarc", Result: "pass",
				Props: []Prop{{Type: "header", Property: "from", Value: "example.org"}}}}}
		}}},
		"clamd": fakeScan{&fake{name: "clamd", kind: KindVirus, scan: func(s *Session, m Message) []Finding {
			order = append(order, "clamd")
			return []Finding{{Status: "clean", AddHeaders: []Header{{Name: "X-Virus-Scanned", Value: " moat (clamd)"}}}}
		}}},
		"spamd": fakeScan{&fake{name: "spamd", kind: KindAntispam, scan: func(s *Session, m Message) []Finding {
			return []Finding{{Status: "spam", Score: 6.5, Scored: true, Tests: []string{"GTUBE"}}}
		}}},
	}
	e, _ := mustEngine(t, "[policy]\nauthserv_id = \"mx.test\"\ntag_score = 5\n[checks.dmarc]\n[checks.clamd]\n[checks.spamd]\n", checks)
	s := newTestSession()
	e.Mail(context.Background(), s, "a@example.org", "")
	e.Rcpt(context.Background(), s, "b@local.example", "")
	s.Headers = []Header{{Name: "X-Virus-Scanned", Value: " forged"}, {Name: "X-Spam-Status", Value: " No"}}
	e.Headers(context.Background(), s)
	out := e.EOM(context.Background(), s, memMessage("X-Virus-Scanned: forged\r\n\r\nbody\r\n"))
	if out.Action != ActAccept {
		t.Fatalf("outcome %+v", out.Decision)
	}
	if len(order) < 2 || order[0] != "dmarc" {
		t.Errorf("message checkers run before the scanners: %v", order)
	}
	all := append(append([]Header{}, out.InsertHeaders...), out.AddHeaders...)
	text := ""
	for _, h := range all {
		text += h.Name + ":" + h.Value + "\n"
	}
	for _, want := range []string{
		"Authentication-Results: mx.test;\n\tdmarc=pass header.from=example.org",
		"X-Spam-Flag: YES", "X-Spam-Score: 6.5", "X-Spam-Level: ******",
		"X-Spam-Status: Yes, score=6.5 required=5.0 tests=GTUBE",
		"X-Virus-Scanned: moat (clamd)", "X-Moat: ref=" + s.Ref,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("headers lack %q:\n%s", want, text)
		}
	}
	if len(out.RemoveHeaders) != 2 {
		t.Errorf("forged X-Virus-Scanned and X-Spam-Status must go: %+v", out.RemoveHeaders)
	}
}

func TestBuildErrorsNameFileLineAndKey(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{"unknown check", "[checks.relay]\n[checks.nosuch]\n", "moat.toml:2: checks.nosuch: unknown check"},
		{"unknown table", "[polcy]\ndry_run = true\n", "moat.toml:1: polcy: unknown table"},
		{"unknown key", "[policy]\n\ndryrun = true\n", "moat.toml:3: policy.dryrun: unknown key"},
		{"wrong type", "[policy]\ntag_score = \"high\"\n", "moat.toml:2: policy.tag_score: want a number"},
		{"bad duration", "[policy]\nstage_timeout = \"soon\"\n", "moat.toml:2: policy.stage_timeout: invalid duration"},
		{"check's own error", "[checks.relay]\nflag = \"bad\"\n", "moat.toml:2: checks.relay.flag: bad flag"},
		{"check's unknown key", "[checks.relay]\nflg = 1\n", "moat.toml:2: checks.relay.flg: unknown key"},
		{"generic key type", "[checks.relay]\nenabled = \"yes\"\n", "moat.toml:2: checks.relay.enabled: want true or false"},
		{"toml syntax", "[policy\n", "moat.toml:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakes = map[string]Check{"relay": fakeRcpt{&fake{name: "relay", kind: KindAccess}}}
			f, err := config.Parse("moat.toml", []byte(tt.toml))
			if err == nil {
				_, err = Build(f, nil, Services{})
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *config.Error", err)
			}
		})
	}
}

func TestDisabledCheckDoesNotRun(t *testing.T) {
	ran := false
	checks := map[string]Check{"relay": fakeRcpt{&fake{name: "relay", kind: KindAccess, rcpt: func(*Session, *Recipient) []Finding {
		ran = true
		return nil
	}}}}
	e, _ := mustEngine(t, "[checks.relay]\nenabled = false\n", checks)
	s := newTestSession()
	e.Mail(context.Background(), s, "a@b.example", "")
	e.Rcpt(context.Background(), s, "c@d.example", "")
	if ran || len(e.Checks()) != 0 {
		t.Error("a disabled check ran")
	}
}

func TestMalformedSenderGetsDefinedAnswer(t *testing.T) {
	e, _ := mustEngine(t, "", nil)
	s := newTestSession()
	d := e.Mail(context.Background(), s, "a b@c", "")
	if d.Action != ActReject || d.Reply.Code != 553 || d.Reply.Enhanced != "5.1.7" || !strings.Contains(d.Reply.Text, "ref=") {
		t.Errorf("got %+v", d)
	}
}

func TestConnectStageFactsSurviveNewMessage(t *testing.T) {
	checks := map[string]Check{"dnsbl": fakeConnect{&fake{name: "dnsbl", kind: KindAntispam, connect: func(s *Session) []Finding {
		s.Set(FactDNSWL, "yes")
		return nil
	}}}}
	e, _ := mustEngine(t, "[checks.dnsbl]\n", checks)
	s := newTestSession()
	e.Connect(context.Background(), s)
	e.Mail(context.Background(), s, "a@b.example", "")
	s.Set(FactSPFResult, "pass")
	e.Mail(context.Background(), s, "a@b.example", "")
	if s.Get(FactDNSWL) != "yes" {
		t.Error("a connect-stage fact was lost at the next MAIL")
	}
	if s.Get(FactSPFResult) != "" {
		t.Error("a message fact survived into the next message")
	}
}

func TestEveryIncomingSpamHeaderIsRemoved(t *testing.T) {
	e, _ := mustEngine(t, "", nil)
	s := newTestSession()
	e.Mail(context.Background(), s, "a@example.org", "")
	e.Rcpt(context.Background(), s, "b@local.example", "")
	s.Headers = []Header{{Name: "X-Spam-Report", Value: " forged"}, {Name: "x-spam-checker-version", Value: " forged"},
		{Name: "X-Spammy-Not-Ours", Value: " kept"}, {Name: "X-Spam-Status", Value: " No"}, {Name: "X-Spam-Status", Value: " No"}}
	out := e.EOM(context.Background(), s, memMessage("\r\nbody\r\n"))
	var got []string
	for _, r := range out.RemoveHeaders {
		got = append(got, fmt.Sprintf("%s#%d", r.Name, r.Index))
	}
	if want := "X-Spam-Report#1 x-spam-checker-version#1 X-Spam-Status#1 X-Spam-Status#2"; strings.Join(got, " ") != want {
		t.Errorf("removed %v, want %s", got, want)
	}
}

func TestTagScoreZeroTurnsTheFlagOff(t *testing.T) {
	hs := spamHeaderSet(3, 0, nil, false)
	for _, h := range hs {
		if h.Name == "X-Spam-Flag" || strings.HasPrefix(h.Value, " Yes") {
			t.Errorf("tag_score 0 must not flag: %+v", hs)
		}
	}
	if hs := spamHeaderSet(6, 5, nil, false); hs[0].Name != "X-Spam-Flag" {
		t.Errorf("score over tag_score must flag: %+v", hs)
	}
}

func TestThresholdsValidated(t *testing.T) {
	for toml, want := range map[string]string{
		"[policy]\nreject_score = -1\n":                 "policy.reject_score: must not be negative",
		"[policy]\ntag_score = 20\nreject_score = 10\n": "policy.tag_score: must not be above reject_score",
	} {
		f, err := config.Parse("moat.toml", []byte(toml))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Build(f, nil, Services{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", toml, err, want)
		}
	}
}

func TestSummarySaysWhyACheckSkipped(t *testing.T) {
	checks := map[string]Check{"clamd": fakeScan{&fake{name: "clamd", kind: KindVirus, scan: func(*Session, Message) []Finding {
		return []Finding{{Status: StatusSkipped, Reason: "too-large"}}
	}}}}
	e, logs := mustEngine(t, "[checks.clamd]\n", checks)
	s := newTestSession()
	e.Mail(context.Background(), s, "a@example.org", "")
	e.Rcpt(context.Background(), s, "b@local.example", "")
	out := e.EOM(context.Background(), s, memMessage("\r\nbody\r\n"))
	e.LogMessage(s, out.Decision, out.Score)
	if !strings.Contains(logs.String(), "clamd=skipped/too-large") {
		t.Errorf("summary: %s", logs.String())
	}
}

func TestChecksKnowTheyRunInDryRun(t *testing.T) {
	var seen []bool
	for _, toml := range []string{"[checks.greylist]\n", "[checks.greylist]\ndry_run = true\n"} {
		fakes = map[string]Check{"greylist": ctxRcpt{name: "greylist", f: func(ctx context.Context) { seen = append(seen, InDryRun(ctx)) }}}
		f, _ := config.Parse("moat.toml", []byte(toml))
		e, err := Build(f, nil, Services{})
		if err != nil {
			t.Fatal(err)
		}
		s := newTestSession()
		e.Mail(context.Background(), s, "a@b.example", "")
		e.Rcpt(context.Background(), s, "c@d.example", "")
	}
	if len(seen) != 2 || seen[0] || !seen[1] {
		t.Errorf("InDryRun seen %v, want [false true]", seen)
	}
}

type ctxRcpt struct {
	name string
	f    func(context.Context)
}

func (c ctxRcpt) Name() string { return c.name }
func (c ctxRcpt) Kind() Kind   { return KindAntispam }
func (c ctxRcpt) Rcpt(ctx context.Context, _ *Session, _ *Recipient) []Finding {
	c.f(ctx)
	return nil
}

func TestCheckIgnoringItsDeadlineIsAbandoned(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	fakes = map[string]Check{"greylist": ctxRcpt{name: "greylist", f: func(context.Context) { <-release }}}
	f, _ := config.Parse("moat.toml", []byte("[checks.greylist]\ntimeout = \"50ms\"\n"))
	e, err := Build(f, nil, Services{})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSession()
	e.Mail(context.Background(), s, "a@b.example", "")
	// The check blocks until the test ends: only the engine's own deadline can answer.
	_, d := e.Rcpt(context.Background(), s, "c@d.example", "")
	if d.Action != ActTempfail || d.Reply.Code != 451 || d.Reason != "timeout" {
		t.Errorf("got %+v, want a 451 for the timeout", d)
	}
}

func TestOneDeadlinePerStage(t *testing.T) {
	var late []string
	wait := func(name string) Check {
		return ctxRcpt{name: name, f: func(ctx context.Context) {
			if ctx.Err() != nil {
				late = append(late, name)
				return
			}
			<-ctx.Done()
		}}
	}
	fakes = map[string]Check{"relay": wait("relay"), "senderlists": wait("senderlists"), "greylist": wait("greylist")}
	f, _ := config.Parse("moat.toml", []byte("[policy]\nstage_timeout = \"100ms\"\n[checks.relay]\n[checks.senderlists]\n[checks.greylist]\n"))
	e, err := Build(f, nil, Services{})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSession()
	e.Mail(context.Background(), s, "a@b.example", "")
	e.Rcpt(context.Background(), s, "c@d.example", "")
	// The first check uses up the stage's time; the ones after it start with the deadline already passed.
	if strings.Join(late, ",") != "senderlists,greylist" {
		t.Errorf("checks that started after the stage deadline: %v, want [senderlists greylist]", late)
	}
}

func TestRecipientDryRunInSummaryAndTrace(t *testing.T) {
	refuse := fakeRcpt{&fake{name: "relay", kind: KindAccess, rcpt: func(*Session, *Recipient) []Finding {
		return []Finding{Rejectf(StatusFail, "relay-denied", 550, "5.7.1", "cannot relay")}
	}}}
	e, logs := mustEngine(t, "[checks.relay]\ndry_run = true\n", map[string]Check{"relay": refuse})
	s := newTestSession()
	e.Mail(context.Background(), s, "a@b.example", "")
	e.Rcpt(context.Background(), s, "c@d.example", "")
	out := e.EOM(context.Background(), s, memMessage("\r\nbody\r\n"))
	e.LogMessage(s, out.Decision, out.Score)
	if !strings.Contains(logs.String(), `dry_run="c@d.example: relay: reject (relay-denied)"`) {
		t.Errorf("summary lacks the recipient's dry-run note: %s", logs.String())
	}
	trace := ""
	for _, h := range out.AddHeaders {
		if h.Name == "X-Moat" {
			trace = h.Value
		}
	}
	if !strings.Contains(trace, "dry-run=c@d.example:_relay:_reject_(relay-denied)") {
		t.Errorf("trace header lacks the dry-run note: %q", trace)
	}
}

func TestRetiredEngineIsNotHandedOut(t *testing.T) {
	e, _ := mustEngine(t, "", nil)
	if !e.Acquire() {
		t.Fatal("a new engine must be usable")
	}
	e.Retire()
	if !e.Acquire() {
		t.Error("a retired engine still in use may take more users of the same session")
	}
	e.Release()
	e.Release()
	if e.Acquire() {
		t.Error("a retired engine with no users is closed and must not be acquired")
	}
}
