package attachments

// This file is the only one of the package that uses the ordered-list matcher (internal/wildcard), the list
// helpers (internal/lists) and the action words (policy/action).

import (
	"fmt"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/lists"
	"github.com/moatmail/moat/internal/wildcard"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/action"
)

// orderedList is the concatenation of ordered lists in the barring syntax (a built-in list, the configured
// one, a domain override's): read top to bottom, the last matching line of all decides.
type orderedList struct {
	parts []*wildcard.List
}

// match reports whether s is barred, and the rule that decided ("" when no line matched).
func (l orderedList) match(s string) (barred bool, rule string) {
	subj := wildcard.NewSubject(s)
	for i := len(l.parts) - 1; i >= 0; i-- {
		if b, r := l.parts[i].Match(subj); r != nil {
			return b, ruleText(r)
		}
	}
	return false, ""
}

func (l orderedList) len() int {
	n := 0
	for _, p := range l.parts {
		n += p.Len()
	}
	return n
}

func (l orderedList) with(more *wildcard.List) orderedList {
	if more == nil || more.Len() == 0 {
		return l
	}
	return orderedList{parts: append(append([]*wildcard.List(nil), l.parts...), more)}
}

// ruleText is a rule as written, "~" included, and where it comes from when it is a file's line.
func ruleText(r *wildcard.Rule) string {
	p := r.Pattern.String()
	if r.Exclude {
		p = "~" + p
	}
	if r.Line.Source == builtinSource {
		return "default:" + p
	}
	return p
}

const builtinSource = "built-in list"

// builtinList compiles a list fixed in code.
func builtinList(patterns []string) *wildcard.List {
	lines := make([]config.ListLine, len(patterns))
	for i, p := range patterns {
		lines[i] = config.ListLine{Text: p, Source: builtinSource, Line: i + 1}
	}
	l, err := wildcard.ParseList(lines)
	if err != nil {
		panic(err)
	}
	return l
}

// loadList reads an ordered list from an inline key and a list file; errors name the file, line and key.
func loadList(sec *config.Section, key string, inline []string, fileKey, file string) (*wildcard.List, error) {
	var out *wildcard.List
	var all []config.ListLine
	err := lists.Load(sec, key, inline, fileKey, file, func(lines []config.ListLine) error {
		if _, err := wildcard.ParseList(lines); err != nil {
			return err
		}
		all = append(all, lines...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out, err = wildcard.ParseList(all)
	if err != nil {
		return nil, sec.Errorf(key, "%v", err)
	}
	return out, nil
}

// domainSet is a set of recipient domains ("example.com", or ".example.com" for it and its subdomains).
type domainSet struct{ d *lists.Domains }

func loadDomains(sec *config.Section, key string, inline []string, fileKey, file string) (domainSet, error) {
	d, err := lists.LoadDomains(sec, key, inline, fileKey, file, nil)
	return domainSet{d}, err
}

func (s domainSet) contains(domain string) bool {
	return s.d != nil && s.d.Contains(addr.Domain(domain))
}

func (s domainSet) len() int {
	if s.d == nil {
		return 0
	}
	return s.d.Len()
}

// act is a configured answer: reject, quarantine, score:N, or accept (record only).
type act struct{ a action.Action }

// parseAct reads an action word of this check: "reject", "quarantine", "score:N" ("score" alone is
// defScore), "accept" or "ignore" (record only). There is no "strip": moat never alters bodies.
func parseAct(sec *config.Section, key, s string, defScore float64) (act, error) {
	word := strings.ToLower(strings.TrimSpace(s))
	if word == "accept" {
		word = "ignore"
	}
	a, err := action.Parse(word, defScore)
	if err != nil || a.Kind == action.Tempfail {
		return act{}, sec.Errorf(key, "want \"reject\", \"quarantine\", \"score:N\" or \"accept\", got %q", s)
	}
	return act{a}, nil
}

// verdict is the policy verdict the action asks for.
func (a act) verdict() policy.Verdict {
	switch a.a.Kind {
	case action.Reject:
		return policy.Reject
	case action.Quarantine:
		return policy.Quarantine
	}
	return policy.None
}

// apply sets the finding's verdict, reply and score.
func (a act) apply(f *policy.Finding, reject policy.Reply) {
	f.ApplyAction(a.a, reject, policy.Reply{})
}

func (a act) String() string {
	if a.a.Kind == action.Score {
		return fmt.Sprintf("score:%g", a.a.Score)
	}
	if a.a.Kind == action.Ignore {
		return "accept"
	}
	return a.a.Kind.String()
}

// strength orders actions for choosing the strictest: reject, quarantine, then the score.
func (a act) strength() float64 {
	switch a.a.Kind {
	case action.Reject:
		return 1e12
	case action.Quarantine:
		return 1e11
	case action.Score:
		return a.a.Score
	}
	return -1e12
}
