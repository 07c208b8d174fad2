package action

import (
	"testing"

	"github.com/moatmail/moat/policy"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Action
		wantErr bool
	}{
		{"reject", Action{Kind: Reject}, false},
		{" Tempfail ", Action{Kind: Tempfail}, false},
		{"score", Action{Kind: Score, Score: 2}, false},
		{"score:0.5", Action{Kind: Score, Score: 0.5}, false},
		{"score:-1", Action{Kind: Score, Score: -1}, false},
		{"ignore", Action{Kind: Ignore}, false},
		{"quarantine", Action{Kind: Quarantine}, false},
		{"reject:1", Action{}, true},
		{"score:x", Action{}, true},
		{"score:NaN", Action{}, true},
		{"score:nan", Action{}, true},
		{"score:Inf", Action{}, true},
		{"score:-inf", Action{}, true},
		{"score:1e400", Action{}, true},
		{"bounce", Action{}, true},
		{"", Action{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in, 2)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestApply(t *testing.T) {
	rej := policy.Reply{Code: 550, Enhanced: "5.7.1", Text: "no"}
	temp := policy.Reply{Code: 451, Enhanced: "4.7.1", Text: "later"}
	tests := []struct {
		a       Action
		verdict policy.Verdict
		reply   policy.Reply
		score   float64
	}{
		{Action{Kind: Reject}, policy.Reject, rej, 0},
		{Action{Kind: Tempfail}, policy.Tempfail, temp, 0},
		{Action{Kind: Quarantine}, policy.Quarantine, policy.Reply{}, 0},
		{Action{Kind: Score, Score: 3}, policy.None, policy.Reply{}, 3},
		{Action{Kind: Ignore}, policy.None, policy.Reply{}, 0},
	}
	for _, tc := range tests {
		var f policy.Finding
		tc.a.Apply(&f, rej, temp)
		if f.Verdict != tc.verdict || f.Reply != tc.reply || f.Score != tc.score || f.Scored != (tc.a.Kind == Score) {
			t.Errorf("%v: got %+v", tc.a.Kind, f)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("score:1.5")
	f.Add("reject")
	f.Add("score::")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s, 1)
		if err == nil && (a.Kind < Ignore || a.Kind > Reject) {
			t.Fatalf("%q gave kind %v", s, a.Kind)
		}
	})
}
