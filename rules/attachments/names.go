package attachments

import (
	"fmt"
	"io"
	"mime"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/unicode/norm"
)

// Param is one parameter of a structured header field as written: attribute lower-cased, value unquoted.
type Param struct{ Attr, Value string }

// maxParams bounds the parameters kept of one field, and maxSegments the RFC 2231 continuations of one.
const (
	maxParams   = 64
	maxSegments = 64
)

// parseParams splits "type/subtype; a=b; c=\"d\"" leniently, the way mail clients read it: unknown syntax is
// skipped, not refused, since the names a client would show are what matters.
func parseParams(v string) (string, []Param) {
	head, rest, _ := strings.Cut(v, ";")
	mediaType := strings.ToLower(strings.TrimSpace(head))
	var out []Param
	for len(rest) > 0 && len(out) < maxParams {
		rest = strings.TrimLeft(rest, " \t;")
		if rest == "" {
			break
		}
		i := strings.IndexAny(rest, "=;")
		if i < 0 || rest[i] == ';' { // an attribute without a value
			if i < 0 {
				break
			}
			rest = rest[i+1:]
			continue
		}
		attr := strings.ToLower(strings.TrimSpace(rest[:i]))
		rest = strings.TrimLeft(rest[i+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			j := 1
			for ; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' && j+1 < len(rest) {
					j++
					b.WriteByte(rest[j])
					continue
				}
				if c == '"' {
					break
				}
				b.WriteByte(c)
			}
			val = b.String()
			if j < len(rest) {
				rest = rest[j+1:]
			} else {
				rest = ""
			}
			if k := strings.IndexByte(rest, ';'); k >= 0 {
				rest = rest[k:]
			} else {
				rest = ""
			}
		} else {
			k := strings.IndexByte(rest, ';')
			if k < 0 {
				k = len(rest)
			}
			val = strings.TrimSpace(rest[:k])
			rest = rest[k:]
		}
		if attr != "" {
			out = append(out, Param{Attr: attr, Value: val})
		}
	}
	return mediaType, out
}

// paramValue returns the first plain value of attr.
func paramValue(ps []Param, attr string) string {
	for _, p := range ps {
		if p.Attr == attr {
			return p.Value
		}
	}
	return ""
}

// rawNames returns every file name the entity's header gives, decoded each way a mail client might decode it:
// Content-Disposition filename and Content-Type name, RFC 2231 extended values and continuations, RFC 2047
// encoded words (which clients decode even inside quoted strings), and percent escapes. Different clients
// pick different ones, so all are checked.
func rawNames(e *Entity) []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if s != "" && !seen[s] && len(out) < 16 {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, src := range []struct {
		ps   []Param
		attr string
	}{{e.DispParams, "filename"}, {e.Params, "name"}} {
		if v, ok := paramRFC2231(src.ps, src.attr); ok {
			add(v)
		}
		for _, p := range src.ps {
			if p.Attr != src.attr {
				continue
			}
			add(p.Value)
			dec := decodeWords(p.Value)
			add(dec)
			add(percentDecode(dec))
		}
	}
	return out
}

// paramRFC2231 assembles an RFC 2231 value: "attr*=charset'lang'%xx", or continuations "attr*0*=",
// "attr*1=", … in number order, the extended ones percent-decoded, in the charset of the first.
func paramRFC2231(ps []Param, attr string) (string, bool) {
	for _, p := range ps {
		if p.Attr == attr+"*" {
			cs, val := splitCharset(p.Value)
			return toUTF8(cs, percentBytes(val)), true
		}
	}
	type seg struct {
		n   int
		ext bool
		v   string
	}
	var segs []seg
	for _, p := range ps {
		rest, ok := strings.CutPrefix(p.Attr, attr+"*")
		if !ok || rest == "" {
			continue
		}
		ext := strings.HasSuffix(rest, "*")
		n, err := strconv.Atoi(strings.TrimSuffix(rest, "*"))
		if err != nil || n < 0 || n >= maxSegments {
			continue
		}
		segs = append(segs, seg{n, ext, p.Value})
	}
	if len(segs) == 0 {
		return "", false
	}
	sort.SliceStable(segs, func(i, j int) bool { return segs[i].n < segs[j].n })
	var raw []byte
	cs := ""
	for i, s := range segs {
		v := s.v
		if i == 0 && s.ext {
			cs, v = splitCharset(v)
		}
		if s.ext {
			raw = append(raw, percentBytes(v)...)
		} else {
			raw = append(raw, v...)
		}
	}
	return toUTF8(cs, raw), true
}

func splitCharset(v string) (charset, rest string) {
	parts := strings.SplitN(v, "'", 3)
	if len(parts) != 3 {
		return "", v
	}
	return strings.ToLower(parts[0]), parts[2]
}

func percentBytes(s string) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if b, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				out = append(out, byte(b))
				i += 2
				continue
			}
		}
		out = append(out, s[i])
	}
	return out
}

// percentDecode decodes %XX escapes that some clients put in plain parameter values; a result that is not
// text is dropped.
func percentDecode(s string) string {
	if !strings.Contains(s, "%") {
		return ""
	}
	b := percentBytes(s)
	if !utf8.Valid(b) {
		return toUTF8("iso-8859-1", b)
	}
	return string(b)
}

// toUTF8 converts raw bytes in charset to UTF-8; unknown charsets and invalid bytes give U+FFFD.
func toUTF8(charset string, raw []byte) string {
	if charset == "" || charset == "utf-8" || charset == "us-ascii" || charset == "utf8" {
		return strings.ToValidUTF8(string(raw), "\uFFFD")
	}
	enc, err := htmlindex.Get(charset)
	if err != nil {
		return strings.ToValidUTF8(string(raw), "\uFFFD")
	}
	out, err := enc.NewDecoder().Bytes(raw)
	if err != nil {
		return strings.ToValidUTF8(string(raw), "\uFFFD")
	}
	return string(out)
}

var wordDecoder = &mime.WordDecoder{CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
	enc, err := htmlindex.Get(charset)
	if err != nil {
		return nil, fmt.Errorf("unknown charset %q: %w", charset, err)
	}
	return enc.NewDecoder().Reader(input), nil
}}

// decodeWords decodes RFC 2047 encoded words; text that does not decode stays as it is.
func decodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

// FileName is a file name prepared for matching.
type FileName struct {
	Raw        string   // as decoded from the header or the archive
	Norm       string   // normalised: base name, invisible characters out, NFKC, lower case, no trailing dots or spaces
	Exts       []string // the extensions of Norm, outermost last: "a.pdf.exe" gives ["pdf", "exe"]
	Bidi       bool     // Raw holds a bidirectional override, embedding or isolate (the RTLO trick)
	Invisible  bool     // Raw holds other invisible (format or control) characters
	TrimmedEnd bool     // trailing dots or spaces were removed (Windows drops them)
}

// maxNameLen bounds the characters of a name kept for matching.
const maxNameLen = 1024

// NormalizeName prepares a decoded file name the way Windows and mail clients end up treating it: the last
// path element (names such as "..\\..\\x.exe"), without bidirectional controls and other invisible
// characters (so that "invoice\u202Efdp.exe" is seen as "invoicefdp.exe"), compatibility forms folded by
// NFKC (fullwidth "ｅｘｅ" is "exe"), lower-cased, trailing dots and spaces removed, other white space as plain
// spaces.
func NormalizeName(raw string) FileName {
	n := FileName{Raw: raw}
	s := raw
	if i := strings.LastIndexAny(s, `/\`); i >= 0 && i < len(s)-1 {
		s = s[i+1:]
	}
	var b strings.Builder
	count := 0
	for _, c := range s {
		if count >= maxNameLen {
			break
		}
		switch {
		case isBidiControl(c):
			n.Bidi = true
			continue
		case c == utf8.RuneError || unicode.Is(unicode.Cf, c) || unicode.IsControl(c) || c == '\u115F' || c == '\u1160' || c == '\u3164' || c == '\uFFA0':
			n.Invisible = true // format characters (ZWSP, ZWJ, BOM, soft hyphen, …), controls and Hangul fillers
			continue
		case unicode.IsSpace(c):
			c = ' '
		}
		b.WriteRune(c)
		count++
	}
	s = strings.ToLower(norm.NFKC.String(b.String()))
	trimmed := strings.TrimRight(s, ". ")
	n.TrimmedEnd = trimmed != s
	n.Norm = strings.TrimSpace(trimmed)
	if parts := strings.Split(n.Norm, "."); len(parts) > 1 {
		for _, p := range parts[1:] {
			if p = strings.TrimSpace(p); p != "" {
				n.Exts = append(n.Exts, p)
			}
		}
	}
	return n
}

// Ext is the outermost extension, "" when none.
func (n FileName) Ext() string {
	if len(n.Exts) == 0 {
		return ""
	}
	return n.Exts[len(n.Exts)-1]
}

// isBidiControl reports the characters that reorder displayed text: LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI,
// PDI, and the marks LRM, RLM, ALM.
func isBidiControl(c rune) bool {
	return c >= 0x202A && c <= 0x202E || c >= 0x2066 && c <= 0x2069 || c == 0x200E || c == 0x200F || c == 0x061C
}

// escapeName writes a name for replies, logs and headers: printable ASCII as it is, anything else (controls,
// bidi overrides, non-ASCII, quotes, backslashes) as \uXXXX or \" and \\, so that what is shown cannot be
// reordered or hide anything; cut at 120 characters.
func escapeName(s string) string {
	var b strings.Builder
	for i, c := range s {
		if b.Len() >= 120 {
			b.WriteString("...")
			break
		}
		_ = i
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteRune(c)
		case c > 0xFFFF:
			fmt.Fprintf(&b, "\\U%08x", c)
		default:
			fmt.Fprintf(&b, "\\u%04x", c)
		}
	}
	return b.String()
}

// token writes s as one token for the trace header and the log line: unreserved ASCII as it is, anything else
// percent-encoded, cut at 100 bytes.
func token(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if b.Len() >= 100 {
			b.WriteString("...")
			break
		}
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-+*?$~/!=@", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// printable is s for a defect message: control and non-ASCII characters escaped, cut at 80 characters.
func printable(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return escapeName(s)
}
