package policy

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Session is what checks see of one SMTP session and of the message in progress. The milter fills it from
// the MTA's callbacks and macros; checks read it and may record facts for later checks with Set.
//
// Connection fields (Client*, Helo, TLS, Auth) last for the SMTP connection; message fields (From, Rcpts,
// Headers, findings of message stages) are reset by ResetMessage when a new MAIL FROM starts.
type Session struct {
	Ref     string    // reference id of the current message, quoted in replies and logs
	QueueID string    // the MTA's queue id (macro i), when known
	Start   time.Time // when the current message started (MAIL FROM) or the connection did

	ClientIP   netip.Addr // zero for a local (non-TCP) submission
	ClientPort uint16
	ClientName string // the MTA's idea of the client's host name ({client_name}), "unknown" or "[ip]" when none
	ClientPTR  string // {client_ptr}, when the MTA sends it
	Daemon     string // {daemon_name}
	Helo       string

	TLS  TLSInfo
	Auth AuthInfo

	From     Address // envelope sender; From.Null() for the null sender <>
	MailArgs string  // ESMTP arguments of MAIL FROM
	Rcpts    []*Recipient

	Headers []Header // the message header as received, in order

	mu       sync.Mutex
	stage    Stage // the stage whose checks run now
	connVals map[string]string
	msgVals  map[string]string
	connF    []Finding // findings of connect and helo stages
	msgF     []Finding // findings of mail, data and end-of-message stages
	streams  []streamEntry
}

// FactLocalSubmission is the connection fact ("yes") the milter sets when the MTA says the session has no
// network client at all (Sendmail's local submission, family "unknown"). A session merely lacking a client
// IP is not vouched for.
const FactLocalSubmission = "client/local"

// TLSInfo holds the MTA's TLS macros.
type TLSInfo struct {
	Version     string // {tls_version}; empty without TLS
	Cipher      string
	CipherBits  string
	CertSubject string
	CertIssuer  string
}

// Active reports whether the session uses TLS.
func (t TLSInfo) Active() bool { return t.Version != "" || t.Cipher != "" }

// AuthInfo holds the MTA's SMTP AUTH macros.
type AuthInfo struct {
	Type   string // {auth_type}
	Authen string // {auth_authen}: the authenticated user; empty when not authenticated
	Author string // {auth_author}
}

// Authenticated reports whether the client authenticated with SMTP AUTH.
func (a AuthInfo) Authenticated() bool { return a.Authen != "" }

// Header is one header field as received. Value is everything after the colon, leading space included.
type Header struct {
	Name  string
	Value string
}

// Recipient is one RCPT TO of the current message with the findings and answer it got.
type Recipient struct {
	Addr     Address
	Args     string
	Findings []Finding
	Decision Decision
}

// Accepted reports whether the recipient was accepted at RCPT time.
func (r *Recipient) Accepted() bool { return r.Decision.Action.accepts() }

// NewSession returns an empty session for a new connection.
func NewSession() *Session {
	return &Session{Start: time.Now(), Ref: NewRef(), connVals: map[string]string{}, msgVals: map[string]string{}}
}

// ResetMessage forgets the message in progress (new MAIL FROM, RSET or abort) and keeps the connection facts.
func (s *Session) ResetMessage() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Ref = NewRef()
	s.stage = StageMail
	s.QueueID = ""
	s.Start = time.Now()
	s.From = Address{}
	s.MailArgs = ""
	s.Rcpts = nil
	s.Headers = nil
	s.msgVals = map[string]string{}
	s.msgF = nil
}

// Set records a fact for later checks, named "check/fact" (e.g. "spf/result" = "pass"). Facts set at the
// connect and helo stages last for the connection; others last for the message.
func (s *Session) Set(key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stage <= StageHelo {
		s.connVals[key] = value
		return
	}
	s.msgVals[key] = value
}

// Get returns a fact recorded with Set.
func (s *Session) Get(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.msgVals[key]; ok {
		return v
	}
	return s.connVals[key]
}

// Findings returns every finding of the connection stages and of the current message (not per-recipient ones).
func (s *Session) Findings() []Finding {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Finding, 0, len(s.connF)+len(s.msgF))
	out = append(out, s.connF...)
	return append(out, s.msgF...)
}

// Finding returns the latest finding of the named check, looking at the recipient's findings too when rcpt is
// not nil.
func (s *Session) Finding(check string, rcpt *Recipient) (Finding, bool) {
	if rcpt != nil {
		for i := len(rcpt.Findings) - 1; i >= 0; i-- {
			if rcpt.Findings[i].Check == check {
				return rcpt.Findings[i], true
			}
		}
	}
	all := s.Findings()
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Check == check {
			return all[i], true
		}
	}
	return Finding{}, false
}

func (s *Session) addFindings(stage Stage, fs []Finding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stage <= StageHelo {
		s.connF = append(s.connF, fs...)
	} else {
		s.msgF = append(s.msgF, fs...)
	}
}

// Whitelisted reports whether a white-list finding exempts the message (or, with rcpt, that recipient) from
// anti-spam checks. A finding at the recipient stage exempts only its recipient.
func (s *Session) Whitelisted(rcpt *Recipient) bool {
	for _, f := range s.Findings() {
		if f.Verdict == Whitelist {
			return true
		}
	}
	if rcpt != nil {
		for _, f := range rcpt.Findings {
			if f.Verdict == Whitelist {
				return true
			}
		}
		return false
	}
	// Message level: exempt when every accepted recipient is.
	n := 0
	for _, r := range s.Rcpts {
		if !r.Accepted() {
			continue
		}
		n++
		if !r.whitelisted() {
			return false
		}
	}
	return n > 0
}

func (r *Recipient) whitelisted() bool {
	for _, f := range r.Findings {
		if f.Verdict == Whitelist {
			return true
		}
	}
	return false
}

// AcceptedRcpts lists the recipients accepted at RCPT time.
func (s *Session) AcceptedRcpts() []*Recipient {
	var out []*Recipient
	for _, r := range s.Rcpts {
		if r.Accepted() {
			out = append(out, r)
		}
	}
	return out
}

// HeaderValues returns the values of every header field named name (case-insensitive), in order.
func (s *Session) HeaderValues(name string) []string {
	var out []string
	for _, h := range s.Headers {
		if strings.EqualFold(h.Name, name) {
			out = append(out, h.Value)
		}
	}
	return out
}

// Message is the whole message (header and body, CRLF line ends, as the MTA passed it) at end of message.
type Message interface {
	// Open returns a new reader from the first byte; several readers may be open at once.
	Open() io.Reader
	// Size is the message size in bytes.
	Size() int64
}

// Address is an envelope address as the MTA passed it (without angle brackets), split for checks. Local parts
// keep their case; domains are lower-cased without a trailing dot.
type Address struct {
	Raw    string // as received
	Route  string // source route ("@a,@b") when present, without the colon
	Local  string // local part; quotes removed from a quoted-string local part
	Domain string // lower case, no trailing dot; "[1.2.3.4]" for an address literal
	Quoted bool   // the local part was a quoted string
	null   bool
}

// Null reports whether this is the null reverse path <>.
func (a Address) Null() bool { return a.null }

// String returns the address as local@domain (or "<>" for the null sender).
func (a Address) String() string {
	if a.null {
		return "<>"
	}
	if a.Domain == "" {
		return a.Local
	}
	local := a.Local
	if a.Quoted {
		local = `"` + strings.ReplaceAll(strings.ReplaceAll(local, `\`, `\\`), `"`, `\"`) + `"`
	}
	return local + "@" + a.Domain
}

// ErrBadAddress is returned for an address that is not RFC 5321 syntax.
var ErrBadAddress = errors.New("policy: malformed address")

// ParseAddress splits an envelope address. It accepts what real MTAs pass on: an optional source route, a
// dot-atom or quoted-string local part, and a domain, an address literal, or no domain at all (a local
// user name, as Sendmail may pass). "" and "<>" give the null address.
func ParseAddress(raw string) (Address, error) {
	s := strings.TrimSpace(raw)
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		s = s[1 : len(s)-1]
	}
	a := Address{Raw: raw}
	if s == "" {
		a.null = true
		return a, nil
	}
	if len(s) > 1024 {
		return a, fmt.Errorf("%w: longer than 1024 bytes", ErrBadAddress)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return a, fmt.Errorf("%w: control character in %q", ErrBadAddress, raw)
		}
	}
	// Source route: ../rfc/5321 section 4.1.2, "@one,@two:user@domain".
	if strings.HasPrefix(s, "@") {
		i := strings.IndexByte(s, ':')
		if i < 0 {
			return a, fmt.Errorf("%w: source route without ':' in %q", ErrBadAddress, raw)
		}
		a.Route, s = s[:i], s[i+1:]
	}
	local, domain, err := splitAddr(s)
	if err != nil {
		return a, fmt.Errorf("%w: %v in %q", ErrBadAddress, err, raw)
	}
	if strings.HasPrefix(local, `"`) {
		if len(local) < 2 || !strings.HasSuffix(local, `"`) {
			return a, fmt.Errorf("%w: text after the quoted local part in %q", ErrBadAddress, raw)
		}
		a.Quoted = true
		local = unquote(local)
	} else if i := strings.IndexFunc(local, func(c rune) bool { return !isAtext(c) && c != '.' }); i >= 0 {
		return a, fmt.Errorf("%w: character %q not allowed in an unquoted local part in %q", ErrBadAddress, local[i], raw)
	}
	if local == "" {
		return a, fmt.Errorf("%w: empty local part in %q", ErrBadAddress, raw)
	}
	a.Local = local
	a.Domain = NormalizeDomain(domain)
	if domain != "" && a.Domain == "" {
		return a, fmt.Errorf("%w: empty domain in %q", ErrBadAddress, raw)
	}
	return a, nil
}

// isAtext reports whether c may appear in a dot-atom (../rfc/5322 section 3.2.3); non-ASCII is allowed for
// SMTPUTF8 (../rfc/6531 section 3.3).
func isAtext(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80 ||
		strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", c)
}

// NormalizeDomain lower-cases a domain and drops one trailing dot.
func NormalizeDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(d, "."))
}

// splitAddr splits at the last '@' outside a quoted string.
func splitAddr(s string) (local, domain string, err error) {
	inQuote, esc, at := false, false, -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case c == '\\' && inQuote:
			esc = true
		case c == '"':
			inQuote = !inQuote
		case c == '@' && !inQuote:
			at = i
		}
	}
	if inQuote {
		return "", "", errors.New("unterminated quoted string")
	}
	if at < 0 {
		return s, "", nil
	}
	local, domain = s[:at], s[at+1:]
	if domain == "" {
		return "", "", errors.New("empty domain")
	}
	if strings.ContainsAny(domain, " \t\"<>") {
		return "", "", errors.New("invalid character in domain")
	}
	return local, domain, nil
}

func unquote(q string) string {
	if len(q) >= 2 && q[0] == '"' && q[len(q)-1] == '"' {
		q = q[1 : len(q)-1]
	}
	var b strings.Builder
	esc := false
	for i := 0; i < len(q); i++ {
		if !esc && q[i] == '\\' {
			esc = true
			continue
		}
		esc = false
		b.WriteByte(q[i])
	}
	return b.String()
}
