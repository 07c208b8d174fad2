package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Level is how a finding stands against the checklist.
type Level string

const (
	Pass Level = "PASS"
	Warn Level = "WARN"
	Fail Level = "FAIL"
)

// Finding is one checked point: its section ("dns", "smtp mx.example.org", "postfix", "moat"), a short
// name, the level, what was found, and for WARN and FAIL the one-line fix.
type Finding struct {
	Section string `json:"section"`
	Check   string `json:"check"`
	Level   Level  `json:"level"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix,omitempty"`
}

// Report collects the findings of one run; it is safe for concurrent use.
type Report struct {
	Domain string `json:"domain"`

	mu       sync.Mutex
	findings []Finding
}

func (r *Report) add(f Finding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.findings = append(r.findings, f)
}

// Findings returns the findings in the order they were made.
func (r *Report) Findings() []Finding {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Finding(nil), r.findings...)
}

// Find returns the findings of a section and check ("" matches any section).
func (r *Report) Find(section, check string) []Finding {
	var out []Finding
	for _, f := range r.Findings() {
		if (section == "" || f.Section == section) && f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

// Failed reports whether some finding is a FAIL.
func (r *Report) Failed() bool {
	for _, f := range r.Findings() {
		if f.Level == Fail {
			return true
		}
	}
	return false
}

// counts returns how many findings there are of each level.
func (r *Report) counts() map[Level]int {
	c := map[Level]int{}
	for _, f := range r.Findings() {
		c[f.Level]++
	}
	return c
}

// section is a helper that adds findings to one section of a report.
type section struct {
	r    *Report
	name string
}

func (s section) pass(check, format string, args ...any) {
	s.r.add(Finding{Section: s.name, Check: check, Level: Pass, Detail: fmt.Sprintf(format, args...)})
}

func (s section) warn(check, fix, format string, args ...any) {
	s.r.add(Finding{Section: s.name, Check: check, Level: Warn, Detail: fmt.Sprintf(format, args...), Fix: fix})
}

func (s section) fail(check, fix, format string, args ...any) {
	s.r.add(Finding{Section: s.name, Check: check, Level: Fail, Detail: fmt.Sprintf(format, args...), Fix: fix})
}

// WriteJSON writes the report as one JSON object: domain, findings, and the number of each level.
func (r *Report) WriteJSON(w io.Writer) error {
	findings := r.Findings()
	if findings == nil {
		findings = []Finding{}
	}
	c := r.counts()
	out := struct {
		Domain   string    `json:"domain"`
		Failed   bool      `json:"failed"`
		Pass     int       `json:"pass"`
		Warn     int       `json:"warn"`
		Fail     int       `json:"fail"`
		Findings []Finding `json:"findings"`
	}{r.Domain, r.Failed(), c[Pass], c[Warn], c[Fail], findings}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// WriteTable writes the report for people: one line per finding, the fix on the line below it, and a
// summary line.
func (r *Report) WriteTable(w io.Writer) error {
	findings := r.Findings()
	wSec, wCheck := len("SECTION"), len("CHECK")
	for _, f := range findings {
		wSec, wCheck = max(wSec, len(f.Section)), max(wCheck, len(f.Check))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "moat audit of %s\n\n", r.Domain)
	fmt.Fprintf(&b, "%-4s  %-*s  %-*s  %s\n", "", wSec, "SECTION", wCheck, "CHECK", "FINDING")
	for _, f := range findings {
		fmt.Fprintf(&b, "%-4s  %-*s  %-*s  %s\n", f.Level, wSec, f.Section, wCheck, f.Check, oneLine(f.Detail))
		if f.Fix != "" {
			fmt.Fprintf(&b, "%-4s  %-*s  %-*s  fix: %s\n", "", wSec, "", wCheck, "", oneLine(f.Fix))
		}
	}
	c := r.counts()
	fmt.Fprintf(&b, "\n%d pass, %d warn, %d fail\n", c[Pass], c[Warn], c[Fail])
	_, err := io.WriteString(w, b.String())
	return err
}

// oneLine keeps a remote server's text from breaking the table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
