package policy

import (
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/moatmail/moat/internal/addr"
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

	From     addr.Address // envelope sender; From.Null() for the null sender <>
	MailArgs string       // ESMTP arguments of MAIL FROM
	Rcpts    []*Recipient

	Headers []Header // the message header as received, in order

	// ReadOnly asks stateful checks (greylisting) to decide without recording anything: `moat scan` judges a
	// message without --update-state.
	ReadOnly bool

	mu       sync.Mutex
	stage    Stage // the stage whose checks run now
	connVals map[string]string
	msgVals  map[string]string
	connF    []Finding // findings of connect and helo stages
	msgF     []Finding // findings of mail, data and end-of-message stages
	streams  []streamEntry
}

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

// Trusted reports whether the client is vouched for: authenticated with SMTP AUTH, or in relay's trusted
// networks (FactTrustedNetwork). Checks that judge only strangers' mail (SPF, DMARC, rDNS, DNSBL, greylisting)
// skip trusted clients, and DKIM signs only their mail.
func (s *Session) Trusted() bool {
	return s.Auth.Authenticated() || s.Get(FactTrustedNetwork) == "yes"
}

// Header is one header field as received. Value is everything after the colon, leading space included.
type Header struct {
	Name  string
	Value string
}

// Recipient is one RCPT TO of the current message with the findings and answer it got.
type Recipient struct {
	Addr     addr.Address
	Args     string
	Findings []Finding
	Decision Decision
}

// Accepted reports whether the recipient was accepted at RCPT time.
func (r *Recipient) Accepted() bool { return r.Decision.Action.accepts() }

// Refused reports whether the findings so far refuse the recipient: a refusal of its own (a check before the
// caller in Order) or an anti-spam refusal of the message found before RCPT (DNSBL at connect, SPF at MAIL),
// the same findings Engine.Rcpt hands the policy step. Dry-run verdicts never count. A check that keeps
// state (greylisting) asks it so as not to record a recipient that is refused anyway.
func (r *Recipient) Refused(s *Session) bool {
	for _, f := range rcptFindings(s, r) {
		if f.Verdict == Reject || f.Verdict == Tempfail {
			return true
		}
	}
	return false
}

// rcptFindings are the findings that decide a recipient: the anti-spam refusals of the message found before
// RCPT, unless the recipient is white-listed, then the recipient's own.
func rcptFindings(s *Session, r *Recipient) []Finding {
	var out []Finding
	if !s.Whitelisted(r) {
		for _, f := range s.Findings() {
			if f.Kind == KindAntispam && (f.Verdict == Reject || f.Verdict == Tempfail) {
				out = append(out, f)
			}
		}
	}
	return append(out, r.Findings...)
}

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
	s.From = addr.Address{}
	s.MailArgs = ""
	s.Rcpts = nil
	s.Headers = nil
	s.msgVals = map[string]string{}
	s.msgF = nil
}

// Set records a fact for later checks, named "check/fact" (e.g. FactSPFResult = "pass"). Facts set at the
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
