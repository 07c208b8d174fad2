package policy

import (
	"context"
	"strings"
	"testing"
)

// relayBoth is a relay check that, like the real one, looks at the client at connect and decides at RCPT.
type relayBoth struct{ *fake }

func (relayBoth) Connect(context.Context, *Session) []Finding {
	return []Finding{{Status: StatusNone, Detail: "client not in trusted networks"}}
}

func (relayBoth) Rcpt(_ context.Context, _ *Session, r *Recipient) []Finding {
	if r.Addr.Domain != "local.test" {
		return []Finding{Rejectf(StatusFail, "relay-denied", 554, "5.7.1", "relaying denied")}
	}
	return []Finding{{Status: StatusPass, Reason: "local-domain"}}
}

func summaryEngine(t *testing.T, virus bool) (*Engine, *Session, Outcome, string) {
	checks := map[string]Check{
		"relay": relayBoth{&fake{name: "relay", kind: KindAccess}},
		"greylist": fakeRcpt{&fake{name: "greylist", kind: KindAntispam, rcpt: func(*Session, *Recipient) []Finding {
			return []Finding{{Status: StatusPass, Reason: "known"}}
		}}},
		"clamd": fakeScan{&fake{name: "clamd", kind: KindVirus, scan: func(*Session, Message) []Finding {
			if virus {
				return []Finding{Rejectf("found", "virus", 554, "5.7.1", "virus found")}
			}
			return []Finding{{Status: "clean"}}
		}}},
	}
	e, logs := mustEngine(t, "[checks.relay]\n[checks.greylist]\n[checks.clamd]\n", checks)
	s := newTestSession()
	ctx := context.Background()
	e.Connect(ctx, s)
	e.Mail(ctx, s, "a@remote.example", "")
	e.Rcpt(ctx, s, "good@local.test", "")
	e.Rcpt(ctx, s, "other@elsewhere.example", "")
	out := e.EOM(ctx, s, memMessage("\r\nbody\r\n"))
	e.LogMessage(s, out.Decision, out.Score)
	return e, s, out, logs.String()
}

func TestSummaryListsChecksByStage(t *testing.T) {
	_, _, out, logs := summaryEngine(t, true)
	if out.Action != ActReject {
		t.Fatalf("action %v", out.Action)
	}
	want := `checks="connect(relay=none) rcpt(relay=pass|fail/relay-denied greylist=pass) eom(clamd=found/virus)"`
	if !strings.Contains(logs, want) {
		t.Errorf("log line lacks %s:\n%s", want, logs)
	}
	// A recipient accepted at RCPT shares the message's fate: refused with it, never "continue".
	for _, want := range []string{"rcpts=good@local.test:reject(clamd/virus),other@elsewhere.example:reject(relay/relay-denied)", "action=reject"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log line lacks %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "continue") {
		t.Errorf("log line says continue:\n%s", logs)
	}
}

func TestTraceHeaderHasRcptStageChecks(t *testing.T) {
	_, _, out, logs := summaryEngine(t, false)
	if out.Action != ActAccept {
		t.Fatalf("action %v", out.Action)
	}
	trace := ""
	for _, h := range out.AddHeaders {
		if h.Name == "X-Moat" {
			trace = h.Value
		}
	}
	// Only the accepted recipient's RCPT findings: the refused one is not a recipient of this message.
	want := "checks=connect(relay:none) rcpt(relay:pass,greylist:pass) eom(clamd:clean)"
	if !strings.Contains(trace, want) {
		t.Errorf("X-Moat %q lacks %q", trace, want)
	}
	if !strings.Contains(logs, "rcpts=good@local.test:accept,other@elsewhere.example:reject(relay/relay-denied)") {
		t.Errorf("log line:\n%s", logs)
	}
}

func TestScoreRejectionNamesThePolicyInTheLog(t *testing.T) {
	checks := map[string]Check{
		"spamd": fakeScan{&fake{name: "spamd", kind: KindAntispam, scan: func(*Session, Message) []Finding {
			return []Finding{{Status: "scored", Score: 20, Scored: true}}
		}}},
	}
	e, logs := mustEngine(t, "[policy]\nreject_score = 10\n[checks.spamd]\n", checks)
	s := newTestSession()
	ctx := context.Background()
	e.Mail(ctx, s, "a@remote.example", "")
	e.Rcpt(ctx, s, "good@local.test", "")
	out := e.EOM(ctx, s, memMessage("\r\nbody\r\n"))
	e.LogMessage(s, out.Decision, out.Score)
	if !strings.Contains(logs.String(), "reason=policy/reject_score") || strings.Contains(logs.String(), "reason=/score") {
		t.Errorf("log line:\n%s", logs)
	}
}

// OnAccept hooks run after the verdict, only for an accepted message and only for its accepted recipients.
func TestOnAcceptRunsOnlyForAcceptedMail(t *testing.T) {
	for _, tt := range []struct {
		name  string
		virus bool
		want  []string
	}{
		{"accepted", false, []string{"good@local.test"}},
		{"refused at end of message", true, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var called []string
			checks := map[string]Check{
				"relay": relayBoth{&fake{name: "relay", kind: KindAccess}},
				"greylist": fakeRcpt{&fake{name: "greylist", kind: KindAntispam, rcpt: func(_ *Session, r *Recipient) []Finding {
					return []Finding{{Status: StatusPass, OnAccept: func(context.Context) error {
						called = append(called, r.Addr.String())
						return nil
					}}}
				}}},
				"clamd": fakeScan{&fake{name: "clamd", kind: KindVirus, scan: func(*Session, Message) []Finding {
					if tt.virus {
						return []Finding{Rejectf("found", "virus", 554, "5.7.1", "virus found")}
					}
					return []Finding{{Status: "clean"}}
				}}},
			}
			e, _ := mustEngine(t, "[checks.relay]\n[checks.greylist]\n[checks.clamd]\n", checks)
			s := newTestSession()
			ctx := context.Background()
			e.Mail(ctx, s, "a@remote.example", "")
			e.Rcpt(ctx, s, "good@local.test", "")
			e.Rcpt(ctx, s, "other@elsewhere.example", "") // refused by relay: its hook never runs
			if len(called) != 0 {
				t.Fatalf("hooks ran at RCPT: %v", called)
			}
			e.EOM(ctx, s, memMessage("\r\nbody\r\n"))
			if strings.Join(called, ",") != strings.Join(tt.want, ",") {
				t.Errorf("hooks ran for %v, want %v", called, tt.want)
			}
		})
	}
}
