// Package policy is moat's policy engine: the interface every check implements, the session a check sees, the
// findings a check returns, the registry of checks, and the one policy step ([Analyze]) that turns findings into
// the SMTP answer.
//
// # Checks
//
// A check is a package (rules/barring, auth/spf, scanners/clamd, …) that registers a [SetupFunc] from init().
// The setup reads the check's own table of the configuration file ([checks.NAME]) and returns a [Check]. A Check
// implements one method per SMTP stage it cares about ([ConnectChecker], [HeloChecker], [MailChecker],
// [RcptChecker], [HeaderChecker], [BodyStreamer], [MessageChecker]); the engine finds them by type assertion, so
// the milter asks the MTA only for the stages some check needs. A check never talks to the MTA: it returns
// [Finding]s, and only [Analyze] decides the answer.
//
// # Services
//
// What checks share is built by the composition root (cmd/moat) and handed to [Build] as [Services]: the DNS
// resolver from [dns], the state store from [store]. A check asks its [Env] for them (Env.Resolver,
// Env.Store); each is built the first time a check of the configuration asks, once per configuration, and
// closed when the configuration is retired. Those packages sit below policy and never import it.
//
// # Transactions
//
// A [Transaction] drives one SMTP session through an [Engine] stage by stage (connect, HELO, MAIL, RCPT, the
// header fields, the body, end of message), spools the message and writes one summary line per message. The
// milter and `moat scan` both feed one, so that an offline scan judges a message as the daemon does.
//
// # Order
//
// Checks run in the order of the list in order.go, whatever the order of the configuration file. Within a stage
// they run one after the other. At end of message the body streams finish first (in parallel), then the
// [MessageChecker]s run in order, then the [ContentScanner]s all at once (clamd and spamd scan at the same time).
//
// # Kinds
//
// A check is of a [Kind]. A white-list hit exempts the message from anti-spam checks (they are not run and their
// verdicts do not count) but never from virus scanning or access control (relay, recipients, TLS policy).
// Anti-spam rejections found before RCPT (DNSBL at connect, SPF at MAIL) are applied at RCPT time, per recipient,
// once the white lists had their say.
package policy

import (
	"context"
	"fmt"
)

// Stage is an SMTP stage at which checks run.
type Stage int

// The stages, in SMTP order.
const (
	StageConnect Stage = iota
	StageHelo
	StageMail
	StageRcpt
	StageHeaders // end of the header block
	StageEOM     // end of message: the whole message is available
)

var stageNames = [...]string{"connect", "helo", "mail", "rcpt", "headers", "eom"}

func (s Stage) String() string {
	if s >= 0 && int(s) < len(stageNames) {
		return stageNames[s]
	}
	return fmt.Sprintf("stage(%d)", int(s))
}

// Kind says which decisions a white-list hit overrides.
type Kind int

const (
	// KindAntispam checks (DNSBL, rDNS, SPF, DMARC, greylisting, black list, spam scoring) are skipped for
	// white-listed senders.
	KindAntispam Kind = iota
	// KindAccess checks (relay control, recipient validation, barring, TLS/AUTH policy) always run.
	KindAccess
	// KindVirus checks always run: the white list never exempts from virus scanning.
	KindVirus
	// KindInfo checks only record (e.g. DKIM signing, trace); they always run.
	KindInfo
)

var kindNames = [...]string{"antispam", "access", "virus", "info"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Check is the interface every check implements, plus one or more of the stage interfaces below.
type Check interface {
	// Name is the check's registered name, used in config tables, logs and headers.
	Name() string
	// Kind says whether white-listing skips the check.
	Kind() Kind
}

// ConnectChecker runs when the client connects.
type ConnectChecker interface {
	Connect(ctx context.Context, s *Session) []Finding
}

// HeloChecker runs at HELO/EHLO (again after STARTTLS).
type HeloChecker interface {
	Helo(ctx context.Context, s *Session) []Finding
}

// MailChecker runs at MAIL FROM; s.From is set.
type MailChecker interface {
	Mail(ctx context.Context, s *Session) []Finding
}

// RcptChecker runs once per RCPT TO; its findings apply to that recipient only.
type RcptChecker interface {
	Rcpt(ctx context.Context, s *Session, r *Recipient) []Finding
}

// HeaderChecker runs at the end of the header block; s.Headers is complete.
type HeaderChecker interface {
	Headers(ctx context.Context, s *Session) []Finding
}

// BodyStreamer sees the message while it arrives (header block first, then the body), for checks that can work
// incrementally (DKIM). The engine writes each chunk to the stream and calls Finish at end of message.
type BodyStreamer interface {
	StartBody(ctx context.Context, s *Session) BodyStream
}

// BodyStream receives the message bytes. Write must not block on anything slow: a stream that cannot keep up
// should buffer. Finish returns the findings; it is called at end of message (or with a cancelled context on abort).
type BodyStream interface {
	Write(p []byte) (int, error)
	Finish(ctx context.Context) []Finding
}

// MessageChecker runs at end of message with the whole spooled message, after every body stream finished,
// one after the other in Order, so that it sees their findings (DMARC reads DKIM's).
type MessageChecker interface {
	Message(ctx context.Context, s *Session, m Message) []Finding
}

// HeaderOnly is implemented by message checkers that read only the header and the findings of other checks,
// never the body (m), so that the milter need not ask the MTA for the body on their account.
type HeaderOnly interface {
	HeaderOnly() bool
}

// ContentScanner runs at end of message after the message checkers, all scanners at the same time (clamd and
// spamd scan in parallel). White-listing decided by then skips anti-spam scanners.
type ContentScanner interface {
	Scan(ctx context.Context, s *Session, m Message) []Finding
}

// SizeLimited is implemented by content scanners that never read a message above MaxSize bytes (they skip
// it as too large), so that the milter can ask the MTA to stop sending the body of a message that is already
// too large for every check that reads bodies.
type SizeLimited interface {
	MaxSize() int64
}

// HeaderOwner is implemented by checks that add headers which a sender must not be able to forge (X-Spam-*,
// X-Virus-Scanned): the engine removes every incoming copy of these headers before the check's own are added.
type HeaderOwner interface {
	OwnedHeaders() []string
}

// Closer is implemented by checks that hold connections or goroutines; Close runs when the configuration that
// built the check is retired (reload or shutdown) and no message uses it any more.
type Closer interface {
	Close() error
}

// Stages returns the stages a check implements.
func Stages(c Check) []Stage {
	var out []Stage
	if _, ok := c.(ConnectChecker); ok {
		out = append(out, StageConnect)
	}
	if _, ok := c.(HeloChecker); ok {
		out = append(out, StageHelo)
	}
	if _, ok := c.(MailChecker); ok {
		out = append(out, StageMail)
	}
	if _, ok := c.(RcptChecker); ok {
		out = append(out, StageRcpt)
	}
	if _, ok := c.(HeaderChecker); ok {
		out = append(out, StageHeaders)
	}
	_, streams := c.(BodyStreamer)
	_, checks := c.(MessageChecker)
	_, scans := c.(ContentScanner)
	if streams || checks || scans {
		out = append(out, StageEOM)
	}
	return out
}
