package wildcard

import (
	"fmt"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/lists"
)

// Rule is one line of an ordered list: a pattern that bars, or with Exclude (a line starting with '~') one that
// lifts the bar.
type Rule struct {
	Pattern *Pattern
	Exclude bool
	Line    config.ListLine // where the rule comes from, for logs
}

// String returns the rule as written, with its file and line.
func (r *Rule) String() string {
	p := r.Pattern.String()
	if r.Exclude {
		p = "~" + p
	}
	return fmt.Sprintf("%s:%d: %s", r.Line.Source, r.Line.Line, p)
}

// ParseRule parses one list line: a pattern, or '~' and a pattern.
func ParseRule(text string) (Rule, error) {
	var r Rule
	if rest, ok := strings.CutPrefix(text, "~"); ok {
		r.Exclude = true
		text = rest
		if strings.HasPrefix(text, "~") {
			return r, fmt.Errorf("%w: more than one '~'", ErrBadPattern)
		}
	}
	p, err := Compile(text)
	if err != nil {
		return r, err
	}
	r.Pattern = p
	return r, nil
}

// List is an ordered list of rules. It is read top to bottom: each line that matches sets the verdict to barred
// (a plain line) or not barred (a '~' line), and the last matching line decides.
type List struct {
	rules []Rule
}

// ParseList compiles list lines; an error names the file and line of the first malformed one.
func ParseList(lines []config.ListLine) (*List, error) {
	l := &List{rules: make([]Rule, 0, len(lines))}
	for _, line := range lines {
		r, err := ParseRule(line.Text)
		if err != nil {
			return nil, &lists.LineError{Line: line, Err: err}
		}
		r.Line = line
		l.rules = append(l.rules, r)
	}
	return l, nil
}

// Len is the number of rules.
func (l *List) Len() int { return len(l.rules) }

// Match decides for a prepared subject. It returns whether the subject is barred and the rule that decided
// (nil when no line matched). Since the last matching line decides, the list is scanned from the bottom and
// stops at the first match.
func (l *List) Match(s Subject) (barred bool, by *Rule) {
	for i := len(l.rules) - 1; i >= 0; i-- {
		r := &l.rules[i]
		if r.Pattern.MatchSubject(s) {
			return !r.Exclude, r
		}
	}
	return false, nil
}

// Append adds the rules of more after those of l (an inline key's lines, then a list file's).
func (l *List) Append(more *List) { l.rules = append(l.rules, more.rules...) }

// SubjectOf is the text an envelope address is matched as: "local@domain" with the local part re-quoted when
// it was a quoted string (so that `"*@*"@*` finds quoted routing), the domain in the form relay and senderlists
// compare domains in (addr.Address.CanonDomain: lower case, no trailing dot, international names as A-labels), and
// no source route. The null sender is "<>".
func SubjectOf(a addr.Address) string {
	if a.Null() {
		return "<>"
	}
	local := a.Local
	if a.Quoted {
		local = `"` + strings.ReplaceAll(strings.ReplaceAll(local, `\`, `\\`), `"`, `\"`) + `"`
	}
	if a.Domain == "" {
		return local
	}
	return local + "@" + a.CanonDomain()
}
