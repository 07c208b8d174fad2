package policy_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	_ "github.com/moatmail/moat/test/scriptedcheck"
)

// syncBuffer is a log destination the engine's goroutines may write to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

const txConfig = policytest.Policy + `[checks.test]
reject_to = ["refused@local.test"]
panic_body = "PANIC-NOW"
`

// newTx builds an engine from txConfig that logs into the returned buffer, and a transaction over a new
// session.
func newTx(t *testing.T, sp policy.SpoolSettings) (*policy.Transaction, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	e, err := policy.Build(policytest.Parse(t, txConfig), slog.New(slog.NewTextHandler(logs, nil)), policytest.Services())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Retire)
	return policy.NewTransaction(e, policy.NewSession(), sp), logs
}

// summaries counts the summary lines of the message with reference id ref.
func summaries(logs *syncBuffer, ref string) int {
	n := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "ref="+ref) && strings.Contains(line, "action=") {
			n++
		}
	}
	return n
}

// sendMessage runs one whole message with body through tx and returns its outcome.
func sendMessage(t *testing.T, tx *policy.Transaction, body string) policy.Outcome {
	t.Helper()
	ctx := context.Background()
	if d := tx.Mail(ctx, policy.MailCommand{From: "alice@remote.test"}); d.Action != policy.ActContinue {
		t.Fatalf("MAIL: %+v", d)
	}
	if d := tx.Rcpt(ctx, "bob@local.test", ""); d.Action != policy.ActContinue {
		t.Fatalf("RCPT: %+v", d)
	}
	tx.Header("Subject", " test")
	tx.Header("From", " <alice@remote.test>")
	if d := tx.EndHeaders(ctx); d.Action != policy.ActContinue {
		t.Fatalf("end of headers: %+v", d)
	}
	tx.Body([]byte(body))
	return tx.EOM(ctx)
}

func TestTransactionSummaryOnce(t *testing.T) {
	tx, logs := newTx(t, policy.SpoolSettings{Memory: 1 << 20})
	ctx := context.Background()
	tx.Session().Helo = "client.test"
	tx.Connect(ctx)
	tx.Helo(ctx)
	out := sendMessage(t, tx, "hello\r\n")
	ref := tx.Session().Ref
	if out.Action != policy.ActAccept {
		t.Fatalf("outcome %+v, want accept", out.Decision)
	}
	tx.Abort() // the MTA's abort after end of message must not log the message again
	if n := summaries(logs, ref); n != 1 {
		t.Fatalf("%d summary lines for %s, want 1:\n%s", n, ref, logs)
	}
	if tx.InMessage() {
		t.Error("still in a message after end of message")
	}
}

func TestTransactionAbort(t *testing.T) {
	tx, logs := newTx(t, policy.SpoolSettings{Memory: 1 << 20})
	ctx := context.Background()
	tx.Mail(ctx, policy.MailCommand{From: "alice@remote.test"})
	tx.Rcpt(ctx, "bob@local.test", "")
	first := tx.Session().Ref
	tx.Abort() // RSET
	if n := summaries(logs, first); n != 1 || !strings.Contains(logs.String(), "action=none") ||
		strings.Contains(logs.String(), "no-data") || !strings.Contains(logs.String(), "rcpts=bob@local.test:none ") {
		t.Fatalf("RSET: %d summary lines for %s, want 1 with action=none:\n%s", n, first, logs)
	}
	// Every recipient refused, then a new MAIL: the refusal is the first message's answer.
	tx.Mail(ctx, policy.MailCommand{From: "alice@remote.test"})
	second := tx.Session().Ref
	if second == first {
		t.Fatal("a new message kept the old reference id")
	}
	if d := tx.Rcpt(ctx, "refused@local.test", ""); d.Action != policy.ActReject {
		t.Fatalf("RCPT refused@: %+v", d)
	}
	tx.Mail(ctx, policy.MailCommand{From: "carol@remote.test"})
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "ref="+second) {
			line = l
		}
	}
	if summaries(logs, second) != 1 || !strings.Contains(line, "action=reject") {
		t.Fatalf("message with every recipient refused: %q", line)
	}
}

func TestTransactionPanicIsTempfail(t *testing.T) {
	tx, logs := newTx(t, policy.SpoolSettings{Memory: 1 << 20})
	out := sendMessage(t, tx, "PANIC-NOW\r\n")
	if out.Action != policy.ActTempfail || out.Reply.Code != 451 || out.Reply.Enhanced != "4.3.0" {
		t.Fatalf("outcome %+v, want 451 4.3.0", out.Decision)
	}
	if n := summaries(logs, tx.Session().Ref); n != 1 {
		t.Fatalf("%d summary lines, want 1", n)
	}
	// The transaction goes on: the next message is judged normally.
	if out := sendMessage(t, tx, "fine\r\n"); out.Action != policy.ActAccept {
		t.Fatalf("next message: %+v", out.Decision)
	}
}

func TestTransactionSpoolFailure(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone")
	tx, logs := newTx(t, policy.SpoolSettings{Dir: missing, Memory: 16})
	out := sendMessage(t, tx, strings.Repeat("x", 4096)+"\r\n")
	ref := tx.Session().Ref
	if out.Action != policy.ActTempfail || out.Reply.Code != 451 || out.Reply.Enhanced != "4.3.0" ||
		!strings.Contains(out.Reply.Text, ref) {
		t.Fatalf("outcome %+v, want 451 4.3.0 naming %s", out.Decision, ref)
	}
	if !strings.Contains(logs.String(), "spool") || summaries(logs, ref) != 1 {
		t.Fatalf("log:\n%s", logs)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("spool directory created: %v", err)
	}
}

// TestConnectionFindingsOncePerMessage: the connect- and HELO-stage findings apply to every message of the
// connection, and each message's summary line lists them once, after RSET or a second MAIL FROM too.
func TestConnectionFindingsOncePerMessage(t *testing.T) {
	logs := &syncBuffer{}
	e, err := policy.Build(policytest.Parse(t, policytest.Policy+"[checks.test]\nconnect_error = \"scripted\"\n"),
		slog.New(slog.NewTextHandler(logs, nil)), policytest.Services())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Retire)
	tx := policy.NewTransaction(e, policy.NewSession(), policy.SpoolSettings{})
	ctx := context.Background()
	tx.Connect(ctx)
	tx.Session().Helo = "client.example"
	tx.Helo(ctx)
	var refs []string
	sendMessage(t, tx, "first") // accepted
	refs = append(refs, tx.Session().Ref)
	tx.Mail(ctx, policy.MailCommand{From: "alice@remote.test"}) // ended by RSET
	tx.Rcpt(ctx, "bob@local.test", "")
	refs = append(refs, tx.Session().Ref)
	tx.Abort()
	tx.Mail(ctx, policy.MailCommand{From: "alice@remote.test"}) // ended by the next MAIL FROM
	refs = append(refs, tx.Session().Ref)
	sendMessage(t, tx, "last")
	refs = append(refs, tx.Session().Ref)
	tx.Abort()
	for i, ref := range refs {
		line := ""
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "ref="+ref) && strings.Contains(l, "msg=message") {
				line = l
			}
		}
		if line == "" {
			t.Fatalf("message %d: no summary line for ref %s:\n%s", i+1, ref, logs)
		}
		for _, want := range []string{"scripted at connect", "scripted at helo", "connect(test=temperror/test-connect)", "helo(test=temperror/test-helo)"} {
			if n := strings.Count(line, want); n != 1 {
				t.Errorf("message %d: %q %d times in the summary line, want once:\n%s", i+1, want, n, line)
			}
		}
	}
}
