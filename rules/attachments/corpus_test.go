package attachments_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/rules/attachments"
	"github.com/moatmail/moat/rules/attachments/attachtest"
	"github.com/moatmail/moat/test/stack"
)

type bytesMessage []byte

func (b bytesMessage) Open() io.Reader { return bytes.NewReader(b) }
func (b bytesMessage) Size() int64     { return int64(len(b)) }

// newCheck builds the check from a [checks.attachments] table.
func newCheck(t testing.TB, table string) *attachments.Check {
	t.Helper()
	f, err := config.Parse("moat.toml", []byte(table))
	if err != nil {
		t.Fatal(err)
	}
	sec := f.Section("checks").Sub("attachments")
	cfg := attachments.DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	c, err := attachments.New(sec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// verdict sums findings up the way the policy step does for one check: the strongest verdict.
func verdict(fs []policy.Finding) (string, policy.Finding) {
	best := policy.Finding{}
	for _, f := range fs {
		if f.Verdict > best.Verdict {
			best = f
		}
	}
	switch best.Verdict {
	case policy.Reject:
		return "reject", best
	case policy.Quarantine:
		return "quarantine", best
	}
	return "accept", best
}

func TestCorpus(t *testing.T) {
	c := newCheck(t, attachtest.Config)
	cases, missing := attachtest.Corpus(attachtest.TestFiles)
	if len(missing) > 0 {
		if stack.InCI() {
			t.Fatalf("clamav-testfiles samples missing: %v (install clamav-testfiles)", missing)
		}
		t.Logf("clamav-testfiles samples missing, their cases skipped: %v", missing)
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			fs := c.Message(context.Background(), policy.NewSession(), bytesMessage(tc.Message))
			got, decided := verdict(fs)
			var all []string
			found := tc.Reason == ""
			for _, f := range fs {
				all = append(all, string(f.Status)+" "+f.Reason+" | "+f.Detail)
				if tc.Reason != "" && strings.HasPrefix(f.Reason, tc.Reason+":") {
					found = true
				}
				if tc.Reason == "" && f.Status != attachments.StatusClean {
					t.Errorf("clean message got finding %s %s (%s)", f.Status, f.Reason, f.Detail)
				}
			}
			if got != tc.Action || !found {
				t.Fatalf("verdict %s, want %s with a %q finding; findings:\n%s", got, tc.Action, tc.Reason, strings.Join(all, "\n"))
			}
			if got == "reject" && (decided.Reply.Code != tc.Code || !strings.Contains(decided.Reply.Text, "not allowed")) {
				t.Fatalf("reply %v", decided.Reply)
			}
		})
	}
}
