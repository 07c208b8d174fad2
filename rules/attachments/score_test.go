package attachments_test

import (
	"context"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/attachments/attachtest"
)

// TestScoreCounts: a score:N hit of the (virus-kind, by default) check adds to the message's score, so the
// [policy] thresholds act on it.
func TestScoreCounts(t *testing.T) {
	e := policytest.Engine(t, "[policy]\nauthserv_id = \"mx.test\"\nreject_score = 5\n"+
		"[checks.attachments]\nnames = [\"*.odd\"]\nnames_action = \"score:6\"\n")
	run := func(name string) policy.Outcome {
		ctx := context.Background()
		s := policy.NewSession()
		e.Connect(ctx, s)
		e.Helo(ctx, s)
		e.Mail(ctx, s, "a@remote.example", "")
		e.Rcpt(ctx, s, "b@local.example", "")
		msg := attachtest.Message("score", attachtest.Attachment{Header: attachtest.Named("application/octet-stream", name), Data: []byte("plain text")})
		e.Headers(ctx, s)
		e.WriteBody(s, msg)
		return e.EOM(ctx, s, bytesMessage(msg))
	}
	if out := run("report.odd"); out.Score != 6 || out.Action != policy.ActReject {
		t.Errorf("report.odd: score %v, action %v; want 6 and reject", out.Score, out.Action)
	}
	if out := run("report.txt"); out.Score != 0 || out.Action == policy.ActReject {
		t.Errorf("report.txt: score %v, action %v; want 0 and accept", out.Score, out.Action)
	}
}
