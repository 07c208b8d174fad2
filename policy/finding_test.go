package policy

import (
	"strings"
	"testing"

	"github.com/moatmail/moat/policy/action"
)

func TestReplySafe(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice@example.test", "alice@example.test"},
		{"a\r\nb\x00@x", "a??b?@x"},
		{"bücher@example", "b?cher@example"},
		{strings.Repeat("a", 300), strings.Repeat("a", 256) + "..."},
	}
	for _, tt := range tests {
		if got := ReplySafe(tt.in); got != tt.want {
			t.Errorf("ReplySafe(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestApplyAction(t *testing.T) {
	rej := Reply{Code: 550, Enhanced: "5.7.1", Text: "no"}
	temp := Reply{Code: 451, Enhanced: "4.7.1", Text: "later"}
	tests := []struct {
		a       action.Action
		verdict Verdict
		reply   Reply
		score   float64
	}{
		{action.Action{Kind: action.Reject}, Reject, rej, 0},
		{action.Action{Kind: action.Tempfail}, Tempfail, temp, 0},
		{action.Action{Kind: action.Quarantine}, Quarantine, Reply{}, 0},
		{action.Action{Kind: action.Score, Score: 3}, None, Reply{}, 3},
		{action.Action{Kind: action.Ignore}, None, Reply{}, 0},
	}
	for _, tc := range tests {
		var f Finding
		f.ApplyAction(tc.a, rej, temp)
		if f.Verdict != tc.verdict || f.Reply != tc.reply || f.Score != tc.score || f.Scored != (tc.a.Kind == action.Score) {
			t.Errorf("%v: got %+v", tc.a.Kind, f)
		}
	}
}
