package policy

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
)

// NewRef returns a new reference id: 12 characters of base32, quoted in every rejection and in the log line of
// the message so that an administrator can find the one from the other.
func NewRef() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strings.TrimRight(base32.StdEncoding.EncodeToString(b[:]), "=")[:12]
}

// composeHeaders works out the header changes for an accepted message: forged copies of our headers out,
// then Authentication-Results, the trace header, the spam headers and the checks' own headers in.
func (e *Engine) composeHeaders(s *Session, out *Outcome, all []Finding, scored, whitelisted bool) {
	out.RemoveHeaders = e.forgedHeaders(s.Headers)

	var results []*AuthResult
	if s.Auth.Authenticated() {
		results = append(results, &AuthResult{Method: "auth", Result: "pass",
			Props: []Prop{{Type: "smtp", Property: "auth", Value: s.Auth.Authen}}})
	}
	for _, f := range all {
		if f.AuthResult != nil {
			results = append(results, f.AuthResult)
		}
	}
	for _, r := range s.AcceptedRcpts() {
		for _, f := range r.Findings {
			if f.AuthResult != nil {
				results = append(results, f.AuthResult)
			}
		}
	}
	out.InsertHeaders = append(out.InsertHeaders, Header{Name: "Authentication-Results",
		Value: " " + FormatAuthResults(e.Settings.AuthservID, results)})

	if e.Settings.TraceHeader != "" {
		out.AddHeaders = append(out.AddHeaders, Header{Name: e.Settings.TraceHeader, Value: " " + e.trace(s, out)})
	}
	if scored {
		out.AddHeaders = append(out.AddHeaders, spamHeaderSet(out.Score, e.Settings.TagScore, all, whitelisted)...)
	}
	for _, f := range all {
		if f.Prepend {
			out.InsertHeaders = append(out.InsertHeaders, f.AddHeaders...)
		} else {
			out.AddHeaders = append(out.AddHeaders, f.AddHeaders...)
		}
	}
	for _, r := range s.AcceptedRcpts() {
		for _, f := range r.Findings {
			out.AddHeaders = append(out.AddHeaders, f.AddHeaders...)
		}
	}
	for i := range out.AddHeaders {
		out.AddHeaders[i].Value = foldSafe(out.AddHeaders[i].Value)
	}
	for i := range out.InsertHeaders {
		out.InsertHeaders[i].Value = foldSafe(out.InsertHeaders[i].Value)
	}
}

// forgedHeaders finds incoming fields that only moat may write: Authentication-Results claiming our authserv-id
// (RFC 8601 section 5: a forged one must not reach downstream filters) and the headers moat and its checks own.
func (e *Engine) forgedHeaders(hs []Header) []HeaderRef {
	var out []HeaderRef
	count := map[string]int{}
	for _, h := range hs {
		key := strings.ToLower(h.Name)
		count[key]++
		idx := count[key]
		switch {
		case key == "authentication-results":
			if strings.EqualFold(authservIDOf(h.Value), e.Settings.AuthservID) {
				out = append(out, HeaderRef{Name: h.Name, Index: idx})
			}
		default:
			for _, o := range e.owned {
				if ownedName(o, h.Name) {
					out = append(out, HeaderRef{Name: h.Name, Index: idx})
					break
				}
			}
		}
	}
	return out
}

// ownedName matches a header name against an owned name, where a trailing '*' matches any rest ("X-Spam-*").
func ownedName(owned, name string) bool {
	if prefix, ok := strings.CutSuffix(owned, "*"); ok {
		return len(name) >= len(prefix) && strings.EqualFold(name[:len(prefix)], prefix)
	}
	return strings.EqualFold(owned, name)
}

// authservIDOf returns the authserv-id of an Authentication-Results value: the first token, before any
// version number, comment or ';'.
func authservIDOf(v string) string {
	v = stripComments(v)
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, `"`) {
		// authserv-id is a value: a quoted string names the same id (RFC 8601 section 2.2).
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			switch c := v[i]; c {
			case '\\':
				if i+1 < len(v) {
					i++
					b.WriteByte(v[i])
				}
			case '"':
				return b.String()
			default:
				b.WriteByte(c)
			}
		}
		return b.String()
	}
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return ""
	}
	return fields[0]
}

func stripComments(v string) string {
	var b strings.Builder
	depth := 0
	for _, c := range v {
		switch {
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// FormatAuthResults formats an Authentication-Results value (without the leading space):
// "authserv-id; method=result reason=\"…\" ptype.prop=value; …", or "authserv-id; none" without results.
func FormatAuthResults(authservID string, results []*AuthResult) string {
	if len(results) == 0 {
		return authservID + "; none"
	}
	var b strings.Builder
	b.WriteString(authservID)
	for _, r := range results {
		b.WriteString(";\n\t")
		b.WriteString(r.Method)
		b.WriteByte('=')
		b.WriteString(r.Result)
		if r.Reason != "" {
			b.WriteString(" reason=")
			b.WriteString(quoteValue(r.Reason))
		}
		for _, p := range r.Props {
			fmt.Fprintf(&b, " %s.%s=%s", p.Type, p.Property, propValue(p.Value))
		}
	}
	return b.String()
}

// propValue writes a property value as a token where it can be one, else as a quoted string.
func propValue(v string) string {
	if v == "" {
		return `""`
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>,;:\"[]?=`, c) >= 0 {
			return quoteValue(v)
		}
	}
	return v
}

func quoteValue(v string) string {
	v = strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, v)
	return `"` + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `"`, `\"`) + `"`
}

// trace is the value of moat's trace header: what was decided, why, and the session's TLS and AUTH facts.
func (e *Engine) trace(s *Session, out *Outcome) string {
	parts := []string{"ref=" + s.Ref, "action=" + out.Action.String()}
	if out.Reason != "" {
		parts = append(parts, "reason="+out.Check+"/"+out.Reason)
	}
	parts = append(parts, fmt.Sprintf("score=%.1f", out.Score))
	if s.TLS.Active() {
		parts = append(parts, "tls="+token(s.TLS.Version)+"/"+token(s.TLS.Cipher))
		if s.TLS.CertSubject != "" {
			parts = append(parts, "tls-cert="+token(s.TLS.CertSubject))
		}
	} else {
		parts = append(parts, "tls=none")
	}
	if s.Auth.Authenticated() {
		parts = append(parts, "auth="+token(s.Auth.Authen))
		if s.Auth.Type != "" {
			parts = append(parts, "auth-type="+token(s.Auth.Type))
		}
	}
	var checks []string
	for _, f := range s.Findings() {
		c := f.Check + ":" + string(f.Status)
		if f.Reason != "" && f.Verdict != None {
			c += "(" + f.Reason + ")"
		}
		checks = append(checks, c)
	}
	if len(checks) > 0 {
		parts = append(parts, "checks="+strings.Join(checks, ","))
	}
	if len(out.DryRun) > 0 {
		parts = append(parts, "dry-run="+token(strings.Join(out.DryRun, ",")))
	}
	return strings.Join(parts, "; ")
}

func token(s string) string {
	return strings.Map(func(c rune) rune {
		if c <= ' ' || c >= 0x7f || c == ';' {
			return '_'
		}
		return c
	}, s)
}

// spamHeaderSet writes SpamAssassin's headers, so that existing Sieve rules and mail clients work unchanged.
func spamHeaderSet(score, required float64, all []Finding, whitelisted bool) []Header {
	var tests []string
	for _, f := range all {
		tests = append(tests, f.Tests...)
	}
	// tag_score 0 turns the flag off, like 0 for the other thresholds.
	spam := !whitelisted && required > 0 && score >= required
	yes := "No"
	if spam {
		yes = "Yes"
	}
	n := int(score)
	if n < 0 {
		n = 0
	}
	if n > 50 {
		n = 50
	}
	testList := "none"
	if len(tests) > 0 {
		testList = strings.Join(tests, ",")
	}
	hs := []Header{
		{Name: "X-Spam-Score", Value: fmt.Sprintf(" %.1f", score)},
		{Name: "X-Spam-Level", Value: " " + strings.Repeat("*", n)},
		{Name: "X-Spam-Status", Value: fmt.Sprintf(" %s, score=%.1f required=%.1f tests=%s", yes, score, required, testList)},
	}
	if spam {
		hs = append([]Header{{Name: "X-Spam-Flag", Value: " YES"}}, hs...)
	}
	return hs
}

// foldSafe makes sure every line break in a value folds (is followed by white space) and is a plain "\n",
// which is how the milter protocol expects folded header values.
func foldSafe(v string) string {
	v = strings.ReplaceAll(v, "\r\n", "\n")
	lines := strings.Split(v, "\n")
	for i := 1; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], " ") && !strings.HasPrefix(lines[i], "\t") {
			lines[i] = " " + lines[i]
		}
	}
	return strings.Join(lines, "\n")
}
