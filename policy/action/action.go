// Package action implements the configurable answer of a check (SPF, DKIM, DMARC, rDNS, attachments) to one
// of its results: "reject", "tempfail", "quarantine", "score" (with a default score) or "score:N", and
// "ignore" (record only).
// It sits below policy; policy.Finding.ApplyAction turns an action into a finding's verdict.
package action

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Kind is what an action does.
type Kind int

const (
	Ignore Kind = iota
	Score
	Quarantine
	Tempfail
	Reject
)

var kindNames = [...]string{"ignore", "score", "quarantine", "tempfail", "reject"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Action is one parsed action.
type Action struct {
	Kind  Kind
	Score float64 // for Score
}

// Parse reads an action word; "score" without a number takes defScore.
func Parse(s string, defScore float64) (Action, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	word, num, hasNum := strings.Cut(s, ":")
	for k, n := range kindNames {
		if word != n {
			continue
		}
		a := Action{Kind: Kind(k)}
		if hasNum {
			if a.Kind != Score {
				return Action{}, fmt.Errorf("only score takes a number, in %q", s)
			}
			f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return Action{}, fmt.Errorf("bad score in %q (want a finite number)", s)
			}
			a.Score = f
		} else if a.Kind == Score {
			a.Score = defScore
		}
		return a, nil
	}
	return Action{}, fmt.Errorf("unknown action %q (want reject, tempfail, quarantine, score, score:N or ignore)", s)
}

// Acts reports whether the action does more than record.
func (a Action) Acts() bool { return a.Kind != Ignore }
