package spamc

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/moatmail/moat/scanners/servers"
)

// Errors of the client.
var (
	// ErrUnavailable: the server could not be reached, or the connection broke or timed out.
	ErrUnavailable = errors.New("spamd: server unavailable")
	// ErrSpamd: spamd answered with an error code of its own (EX_PROTOCOL, EX_UNAVAILABLE, EX_TIMEOUT…).
	ErrSpamd = errors.New("spamd: error reply")
	// ErrProtocol: the reply is not one spamd sends.
	ErrProtocol = errors.New("spamd: malformed reply")
)

// Command is a SPAMC request method (spamd/PROTOCOL in SpamAssassin's source).
type Command string

// The methods this client uses.
const (
	CmdCheck   Command = "CHECK"   // verdict and score only
	CmdSymbols Command = "SYMBOLS" // plus the names of the rules that hit, comma-separated
	CmdReport  Command = "REPORT"  // plus a textual report
	CmdTell    Command = "TELL"    // learn or forget
	CmdPing    Command = "PING"
)

// ProtocolVersion is the SPAMC protocol version sent. 1.5 is the one of SpamAssassin 3.2 and later: it
// requires a header block (even an empty one) on PING, and allows several reply headers.
const ProtocolVersion = "1.5"

// spamd's exit codes (sysexits.h), for error texts.
var exitNames = map[int]string{
	0: "EX_OK", 64: "EX_USAGE", 65: "EX_DATAERR", 66: "EX_NOINPUT", 67: "EX_NOUSER", 68: "EX_NOHOST",
	69: "EX_UNAVAILABLE", 70: "EX_SOFTWARE", 71: "EX_OSERR", 72: "EX_OSFILE", 73: "EX_CANTCREAT",
	74: "EX_IOERR", 75: "EX_TEMPFAIL", 76: "EX_PROTOCOL", 77: "EX_NOPERM", 78: "EX_CONFIG", 79: "EX_TIMEOUT",
}

// serverSide reports whether an error code says that this spamd cannot serve now rather than that the
// request is wrong: EX_UNAVAILABLE, EX_SOFTWARE, EX_OSERR, EX_IOERR, EX_TEMPFAIL and EX_TIMEOUT. Another
// server may well answer, so the client fails over on them (EX_USAGE, EX_DATAERR, EX_PROTOCOL, EX_NOPERM…
// would be the same everywhere).
func serverSide(code int) bool {
	switch code {
	case 69, 70, 71, 74, 75, 79:
		return true
	}
	return false
}

// Request is one SPAMC request without its body.
type Request struct {
	Command       Command
	User          string // "User:" header; empty: none
	ContentLength int64  // exact length of the body as sent (after compression); -1: no body
	Compress      bool   // "Compress: zlib": the body is zlib-compressed
	MessageClass  string // TELL: "spam" or "ham"
	Set           string // TELL: "local"
	Remove        string // TELL: "local"
}

// Header returns the request line and header block, ending with the empty line. It refuses header values
// with line breaks or control characters, which would let a value inject headers.
func (r Request) Header() ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s SPAMC/%s\r\n", r.Command, ProtocolVersion)
	add := func(name, value string) error {
		if value == "" {
			return nil
		}
		for i := 0; i < len(value); i++ {
			if c := value[i]; c < 0x20 || c == 0x7f {
				return fmt.Errorf("spamd: control character in %s header value %q", name, value)
			}
		}
		fmt.Fprintf(&b, "%s: %s\r\n", name, value)
		return nil
	}
	if r.ContentLength >= 0 && r.Command != CmdPing {
		// spamd matches the header name exactly: "Content-length", not "Content-Length".
		fmt.Fprintf(&b, "Content-length: %d\r\n", r.ContentLength)
	}
	if r.Compress {
		b.WriteString("Compress: zlib\r\n")
	}
	for _, h := range [][2]string{{"User", r.User}, {"Message-class", r.MessageClass}, {"Set", r.Set}, {"Remove", r.Remove}} {
		if err := add(h[0], h[1]); err != nil {
			return nil, err
		}
	}
	b.WriteString("\r\n")
	return b.Bytes(), nil
}

// Response is a parsed spamd reply.
type Response struct {
	Version   string // "1.1", "1.5"
	Code      int    // 0 is EX_OK
	Message   string // "EX_OK", "PONG", or spamd's error text
	Headers   map[string]string
	Body      []byte
	Spam      bool    // from the Spam header
	Score     float64 // from the Spam header
	Threshold float64 // spamd's own required score, from the Spam header
	HasSpam   bool    // a Spam header was present
}

// Symbols splits a SYMBOLS body: rule names separated by commas. Every name must be a rule name
// (letters, digits, '_', '.', '-'), or the reply is rejected.
func (r *Response) Symbols() ([]string, error) {
	body := strings.TrimSpace(string(r.Body))
	if body == "" {
		return nil, nil
	}
	parts := strings.Split(body, ",")
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if !validSymbol(p) {
			return nil, fmt.Errorf("%w: bad rule name %q in SYMBOLS body", ErrProtocol, servers.Printable(p))
		}
		out = append(out, p)
	}
	return out, nil
}

func validSymbol(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ParseResponse parses a whole spamd reply (spamd closes the connection after it):
//
//	SPAMD/1.1 0 EX_OK\r\n
//	Content-length: 21\r\n
//	Spam: True ; 1000.0 / 5.0\r\n
//	\r\n
//	GTUBE,MISSING_DATE,...
//
// It checks the status line, that every header line is "Name: value", that the Spam header is
// "True|False|Yes|No ; SCORE / THRESHOLD" with numbers, and that the body is exactly Content-length bytes
// when that header is present. A non-zero code gives an error wrapping ErrSpamd that keeps spamd's text.
func ParseResponse(data []byte) (*Response, error) {
	line, rest, ok := cutLine(data)
	if !ok {
		if len(data) == 0 {
			return nil, fmt.Errorf("%w: empty reply", ErrProtocol)
		}
		line, rest = data, nil // spamd's error replies may end without a line break
	}
	r := &Response{Headers: map[string]string{}}
	proto, after, _ := strings.Cut(string(line), " ")
	ver, ok := strings.CutPrefix(proto, "SPAMD/")
	if !ok || !validVersion(ver) {
		return nil, fmt.Errorf("%w: bad status line %q", ErrProtocol, servers.Printable(string(line)))
	}
	r.Version = ver
	codeText, msg, _ := strings.Cut(after, " ")
	code, err := strconv.Atoi(codeText)
	if err != nil || code < 0 || code > 255 {
		return nil, fmt.Errorf("%w: bad status code in %q", ErrProtocol, servers.Printable(string(line)))
	}
	r.Code, r.Message = code, strings.TrimSpace(msg)
	if code != 0 {
		name := exitNames[code]
		if name == "" {
			name = strconv.Itoa(code)
		}
		return r, fmt.Errorf("%w: %s: %s", ErrSpamd, name, servers.Printable(r.Message))
	}
	// Headers up to the empty line. A reply without a header block (PING) ends here.
	for len(rest) > 0 {
		line, rest, ok = cutLine(rest)
		if !ok {
			return nil, fmt.Errorf("%w: unterminated header line %q", ErrProtocol, servers.Printable(string(line)))
		}
		if len(line) == 0 {
			break
		}
		name, value, found := strings.Cut(string(line), ":")
		if !found || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("%w: header line %q not in \"Name: value\" form", ErrProtocol, servers.Printable(string(line)))
		}
		r.Headers[strings.ToLower(name)] = strings.TrimSpace(value)
	}
	r.Body = rest
	if cl, ok := r.Headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: bad Content-length %q", ErrProtocol, servers.Printable(cl))
		}
		if n != int64(len(r.Body)) {
			return nil, fmt.Errorf("%w: Content-length %d but %d body bytes", ErrProtocol, n, len(r.Body))
		}
	}
	if sp, ok := r.Headers["spam"]; ok {
		if err := r.parseSpam(sp); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// parseSpam parses "True ; 6.5 / 5.0".
func (r *Response) parseSpam(v string) error {
	verdict, nums, ok := strings.Cut(v, ";")
	if !ok {
		return fmt.Errorf("%w: Spam header %q without ';'", ErrProtocol, servers.Printable(v))
	}
	switch strings.ToLower(strings.TrimSpace(verdict)) {
	case "true", "yes":
		r.Spam = true
	case "false", "no":
	default:
		return fmt.Errorf("%w: Spam header verdict %q", ErrProtocol, servers.Printable(verdict))
	}
	scoreText, threshText, ok := strings.Cut(nums, "/")
	if !ok {
		return fmt.Errorf("%w: Spam header %q without '/'", ErrProtocol, servers.Printable(v))
	}
	score, err1 := parseNumber(scoreText)
	thresh, err2 := parseNumber(threshText)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%w: Spam header %q: bad number", ErrProtocol, servers.Printable(v))
	}
	r.Score, r.Threshold, r.HasSpam = score, thresh, true
	return nil
}

// parseNumber accepts decimal numbers only (no NaN, Inf or hex floats), within ±100000.
func parseNumber(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c == '.' || (c == '-' && i == 0)) {
			return 0, errors.New("not a decimal number")
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f > 1e5 || f < -1e5 {
		return 0, errors.New("out of range")
	}
	return f, nil
}

func validVersion(v string) bool {
	major, minor, ok := strings.Cut(v, ".")
	return ok && isDigits(major) && isDigits(minor) && len(v) <= 8
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// cutLine splits at the first "\n" (a preceding "\r" is dropped).
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil, false
	}
	return bytes.TrimSuffix(b[:i], []byte("\r")), b[i+1:], true
}
