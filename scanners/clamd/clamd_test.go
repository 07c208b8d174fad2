package clamd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/spool"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

// wlCheck stands in for the sender lists in these unit tests: configured under the "test" name, it
// white-lists every message at connect.
type wlCheck struct{}

func (wlCheck) Name() string      { return "test" }
func (wlCheck) Kind() policy.Kind { return policy.KindAccess }
func (wlCheck) Connect(context.Context, *policy.Session) []policy.Finding {
	return []policy.Finding{{Status: "listed", Verdict: policy.Whitelist, Reason: "test-whitelist"}}
}

func init() {
	policy.Register("test", func(*config.Section, *policy.Env) (policy.Check, error) { return wlCheck{}, nil })
}

// runEngine passes msg through an engine built from conf and returns the end-of-message outcome.
func runEngine(t *testing.T, conf string, msg []byte) (policy.Outcome, *policy.Session) {
	t.Helper()
	e := policytest.Engine(t, conf)
	t.Cleanup(e.Retire)
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("192.0.2.1")
	s.Helo = "client.example"
	if d := e.Connect(ctx, s); d.Action != policy.ActContinue {
		t.Fatalf("connect: %+v", d)
	}
	e.Helo(ctx, s)
	if d := e.Mail(ctx, s, "a@example.org", ""); d.Action != policy.ActContinue {
		t.Fatalf("mail: %+v", d)
	}
	if _, d := e.Rcpt(ctx, s, "b@example.net", ""); d.Action != policy.ActContinue {
		t.Fatalf("rcpt: %+v", d)
	}
	s.Headers = []policy.Header{{Name: "Subject", Value: " test"}, {Name: "X-Virus-Scanned", Value: " forged clean"}}
	if d := e.Headers(ctx, s); d.Action != policy.ActContinue {
		t.Fatalf("headers: %+v", d)
	}
	sp := spool.New(t.TempDir(), 1<<20)
	defer sp.Close()
	sp.Write(msg)
	e.WriteBody(s, msg)
	return e.EOM(ctx, s, sp), s
}

func TestCheckDecisions(t *testing.T) {
	msg := []byte("Subject: test\r\nX-Virus-Scanned: forged clean\r\n\r\nbody\r\n")
	found := startFake(t, "stream: Eicar-Test-Signature FOUND")
	clean := startFake(t, "stream: OK")
	silent := startFake(t, "", silentFake)
	clamdErr := startFake(t, "stream: Can't allocate memory ERROR")
	sizeLimit := startFake(t, "stream: OK", func(f *fakeClamd) { f.limit = 10 })

	tests := []struct {
		name       string
		server     *fakeClamd
		extra      string
		whitelist  bool
		wantAction policy.Action
		wantReply  string // prefix of the reply, for reject/tempfail
		wantHeader string // X-Virus-Scanned value added, for accepted mail
	}{
		{name: "virus rejected", server: found, wantAction: policy.ActReject, wantReply: "554 5.7.1 Virus found: Eicar-Test-Signature (ref="},
		{name: "virus rejected though white-listed", server: found, whitelist: true, wantAction: policy.ActReject, wantReply: "554 5.7.1 Virus found: Eicar-Test-Signature"},
		{name: "virus quarantined", server: found, extra: `on_virus = "quarantine"`, wantAction: policy.ActQuarantine, wantHeader: " moat (clamd) infected: Eicar-Test-Signature"},
		{name: "virus discarded", server: found, extra: `on_virus = "discard"`, wantAction: policy.ActDiscard},
		{name: "clean", server: clean, wantAction: policy.ActAccept, wantHeader: " moat (clamd)"},
		{name: "silent fails closed", server: silent, extra: `timeout = "300ms"`, wantAction: policy.ActTempfail, wantReply: "451 4.7.1 Virus scan unavailable"},
		{name: "silent fails open", server: silent, extra: "timeout = \"300ms\"\non_failure = \"accept\"", wantAction: policy.ActAccept, wantHeader: " unscanned (clamd timeout)"},
		{name: "clamd error fails closed", server: clamdErr, wantAction: policy.ActTempfail, wantReply: "451 4.7.1"},
		{name: "clamd error fails open", server: clamdErr, extra: `on_failure = "accept"`, wantAction: policy.ActAccept, wantHeader: " unscanned (clamd error)"},
		{name: "too large skipped", server: found, extra: `max_size = "10"`, wantAction: policy.ActAccept, wantHeader: " moat (clamd) skipped: too large"},
		{name: "clamd's size limit skipped as too large", server: sizeLimit, wantAction: policy.ActAccept, wantHeader: " moat (clamd) skipped: too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf := fmt.Sprintf("[checks.clamd]\nservers = [%q]\n%s\n", tc.server.srv.String(), tc.extra)
			if tc.whitelist {
				conf = "[checks.test]\n" + conf
			}
			out, _ := runEngine(t, conf, msg)
			if out.Action != tc.wantAction {
				t.Fatalf("action = %v (%s/%s), want %v", out.Action, out.Check, out.Reason, tc.wantAction)
			}
			if tc.wantReply != "" && !strings.HasPrefix(out.Reply.String(), tc.wantReply) {
				t.Fatalf("reply = %q, want prefix %q", out.Reply.String(), tc.wantReply)
			}
			if tc.wantHeader != "" {
				got := policytest.AddedHeaders(out, HeaderName)
				if len(got) != 1 || got[0] != tc.wantHeader {
					t.Fatalf("X-Virus-Scanned = %q, want [%q]", got, tc.wantHeader)
				}
				if len(out.RemoveHeaders) != 1 || !strings.EqualFold(out.RemoveHeaders[0].Name, HeaderName) {
					t.Fatalf("forged incoming X-Virus-Scanned not removed: %+v", out.RemoveHeaders)
				}
			}
		})
	}
}

// clamd refusing a message as above its StreamMaxLength (max_size set too high) must not tempfail it
// forever: it is skipped as too large, with a warning in the log.
func TestSizeLimitSkippedWithWarning(t *testing.T) {
	f := startFake(t, "stream: OK", func(f *fakeClamd) { f.limit = 100 })
	c, err := New(nil, Config{Servers: []string{f.srv.String()}, MaxSize: 1 << 20, OnVirus: "reject",
		OnFailure: "tempfail", ConnectTimeout: config.Duration(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var logged bytes.Buffer
	c.log = slog.New(slog.NewTextHandler(&logged, nil))
	msg := policytest.Msg(bytes.Repeat([]byte("x"), 1000))
	fs := c.Scan(context.Background(), policy.NewSession(), msg)
	if len(fs) != 1 || fs[0].Verdict != policy.None || fs[0].Status != policy.StatusSkipped || fs[0].Reason != ReasonTooLarge ||
		!strings.Contains(fs[0].Detail, "StreamMaxLength") {
		t.Fatalf("findings %+v, want a too-large skip", fs)
	}
	if len(fs[0].AddHeaders) != 1 || fs[0].AddHeaders[0].Value != headerScanned+" skipped: too large" {
		t.Fatalf("headers %+v", fs[0].AddHeaders)
	}
	if log := logged.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "StreamMaxLength") ||
		!strings.Contains(log, "max_size=1048576") {
		t.Fatalf("log = %q, want a warning naming StreamMaxLength and max_size", log)
	}
}

// The reviewer's case: servers = [silent, healthy] with the default configuration (no attempt_timeout) must
// scan with the healthy one instead of answering 451 at the deadline.
func TestSilentFirstServerFailsOver(t *testing.T) {
	silent := startFake(t, "", silentFake)
	clean := startFake(t, "stream: OK")
	conf := fmt.Sprintf("[checks.clamd]\nservers = [%q, %q]\ntimeout = \"2s\"\n", silent.srv.String(), clean.srv.String())
	out, _ := runEngine(t, conf, []byte("Subject: test\r\n\r\nbody\r\n"))
	if got := policytest.AddedHeaders(out, HeaderName); out.Action != policy.ActAccept || len(got) != 1 || got[0] != headerScanned {
		t.Fatalf("action %v %s, X-Virus-Scanned %q; want scanned clean by the healthy server", out.Action, out.Reply, got)
	}
}

// A relative socket path is relative to the configuration file, not to the working directory.
func TestRelativeSocketPath(t *testing.T) {
	f, err := config.Parse("/etc/moat/moat.toml", []byte("[checks.clamd]\nservers = [\"unix:run/clamd.ctl\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := setup(f.Section("checks."+Name), policy.NewEnv(f, nil, policytest.Services()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.(*Check).Close()
	if got := c.(*Check).servers[0].Addr; got != "/etc/moat/run/clamd.ctl" {
		t.Fatalf("socket = %q, want /etc/moat/run/clamd.ctl", got)
	}
}

func TestSetupErrors(t *testing.T) {
	tests := []struct {
		conf string
		want string
	}{
		{"[checks.clamd]\n", "moat.toml:1: checks.clamd.servers: at least one clamd server"},
		{"[checks.clamd]\nservers = [\"nowhere\"]\n", "moat.toml:2: checks.clamd.servers[0]"},
		{"[checks.clamd]\nservers = [\"tcp:127.0.0.1:99999\"]\n", "moat.toml:2: checks.clamd.servers[0]: port \"99999\""},
		{"[checks.clamd]\nservers = [\"/s\"]\non_virus = \"bounce\"\n", "moat.toml:3: checks.clamd.on_virus"},
		{"[checks.clamd]\nservers = [\"/s\"]\non_failure = \"maybe\"\n", "moat.toml:3: checks.clamd.on_failure"},
		{"[checks.clamd]\nservers = [\"/s\"]\nmax_size = \"lots\"\n", "moat.toml:3: checks.clamd.max_size: invalid size"},
		{"[checks.clamd]\nservers = [\"/s\"]\nmax_size = \"0\"\n", "checks.clamd.max_size: must be positive"},
		{"[checks.clamd]\nservers = [\"/s\"]\nsever = 1\n", "moat.toml:3: checks.clamd.sever: unknown key"},
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
	policytest.ExampleEngine(t, "example.toml", nil, Name).Retire()
}
