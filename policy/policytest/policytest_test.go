package policytest

import (
	"io"
	"slices"
	"testing"

	"github.com/moatmail/moat/policy"
)

func TestHeaders(t *testing.T) {
	got := Headers([]byte("From: a@b\r\nSubject: one\r\n two\r\nX-Empty:\r\n\r\nbody: not a header\r\n"))
	want := []policy.Header{{Name: "From", Value: " a@b"}, {Name: "Subject", Value: " one\r\n two"}, {Name: "X-Empty", Value: ""}}
	if !slices.Equal(got, want) {
		t.Errorf("Headers = %q, want %q", got, want)
	}
}

func TestMsg(t *testing.T) {
	m := Msg("hello")
	b, err := io.ReadAll(m.Open())
	if err != nil || string(b) != "hello" || m.Size() != 5 {
		t.Errorf("Msg: %q, %v, size %d", b, err, m.Size())
	}
}

func TestOutcomeHeaders(t *testing.T) {
	out := policy.Outcome{
		InsertHeaders: []policy.Header{{Name: "Authentication-Results", Value: " mx.test; spf=pass"}},
		AddHeaders:    []policy.Header{{Name: "X-Spam-Status", Value: " No"}, {Name: "x-spam-status", Value: " again"}, {Name: "X-Other", Value: " y"}},
	}
	if got := AuthResults(out); got != " mx.test; spf=pass" {
		t.Errorf("AuthResults = %q", got)
	}
	if got := AuthResults(policy.Outcome{}); got != "" {
		t.Errorf("AuthResults of nothing = %q", got)
	}
	if got := AddedHeaders(out, "X-Spam-Status"); !slices.Equal(got, []string{" No", " again"}) {
		t.Errorf("AddedHeaders = %q", got)
	}
}
