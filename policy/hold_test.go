package policy_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
)

// fakeHolder records what it is asked to hold, and fails when err is set.
type fakeHolder struct {
	err  error
	reqs []policy.HoldRequest
	msgs []string
}

func (h *fakeHolder) Hold(_ context.Context, req policy.HoldRequest) (policy.HoldResult, error) {
	b, _ := io.ReadAll(req.Message.Open())
	h.reqs, h.msgs = append(h.reqs, req), append(h.msgs, string(b))
	return policy.HoldResult{Discard: true}, h.err
}

func holdTx(t *testing.T, h *fakeHolder) *policy.Transaction {
	t.Helper()
	svc := policytest.Services()
	svc.Holder = func(*policy.Env) (policy.Holder, error) { return h, nil }
	e, err := policy.Build(policytest.Parse(t, policytest.Policy+"[checks.test]\nquarantine_to = [\"bob@local.test\"]\n"),
		slog.New(slog.NewTextHandler(io.Discard, nil)), svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Retire)
	return policy.NewTransaction(e, policy.NewSession(), policy.SpoolSettings{Memory: 1 << 20})
}

func TestQuarantineIsHeldThenDiscarded(t *testing.T) {
	h := &fakeHolder{}
	tx := holdTx(t, h)
	out := sendMessage(t, tx, "odd  body\r\n\xe9\r\n")
	if out.Action != policy.ActQuarantine || !out.Stored {
		t.Fatalf("outcome %+v stored=%v, want a stored quarantine", out.Decision, out.Stored)
	}
	if len(h.reqs) != 1 {
		t.Fatalf("%d hold requests", len(h.reqs))
	}
	req := h.reqs[0]
	if req.Ref != tx.Session().Ref || req.Sender != "alice@remote.test" || len(req.Recipients) != 1 ||
		req.Recipients[0] != "bob@local.test" || req.Kind != "policy" || req.Reasons[0] != "test/test-quarantine" {
		t.Fatalf("request %+v", req)
	}
	if want := "Subject: test\r\nFrom: <alice@remote.test>\r\n\r\nodd  body\r\n\xe9\r\n"; h.msgs[0] != want {
		t.Fatalf("held bytes %q, want %q", h.msgs[0], want)
	}
}

func TestQuarantineStoreFailureIsTempfailWithRef(t *testing.T) {
	h := &fakeHolder{err: errors.New("disk full")}
	tx := holdTx(t, h)
	out := sendMessage(t, tx, "body\r\n")
	if out.Action != policy.ActTempfail || out.Reply.Code != 451 || out.Reply.Enhanced != "4.3.0" ||
		!strings.Contains(out.Reply.Text, "ref="+tx.Session().Ref) || out.Stored {
		t.Fatalf("outcome %+v, want 451 4.3.0 with the ref", out.Decision)
	}
}

func TestQuarantineReadOnlyScanKeepsNothing(t *testing.T) {
	h := &fakeHolder{}
	tx := holdTx(t, h)
	tx.Session().ReadOnly = true
	out := sendMessage(t, tx, "body\r\n")
	if out.Action != policy.ActQuarantine || out.Stored || len(h.reqs) != 0 {
		t.Fatalf("outcome %+v stored=%v, %d requests; want a quarantine and nothing held", out.Decision, out.Stored, len(h.reqs))
	}
}
