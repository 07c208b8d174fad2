package action

import (
	"testing"
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
