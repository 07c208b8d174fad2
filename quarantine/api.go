package quarantine

import (
	"context"
	"errors"
	"io"
	"time"
)

// Kind is why a message was held: spam (the score or spamd), virus (clamd) or policy (any other check).
type Kind string

// The kinds of quarantined mail.
const (
	KindSpam   Kind = "spam"
	KindVirus  Kind = "virus"
	KindPolicy Kind = "policy"
)

// State is what became of one recipient's copy of a held message.
type State string

// The states of a recipient.
const (
	StateHeld     State = "held"
	StateReleased State = "released"
	StateDeleted  State = "deleted"
)

// ErrNotFound is returned for an ID the quarantine does not hold (or no longer holds).
var ErrNotFound = errors.New("quarantine: no such message")

// ErrForbidden is returned when the actor may not do what was asked (releasing virus mail without Admin,
// a recipient acting on another recipient's copy).
var ErrForbidden = errors.New("quarantine: not allowed")

// Recipient is one envelope recipient of a held message and what became of its copy.
type Recipient struct {
	Addr    string
	State   State
	Changed time.Time // last state change; zero while held
	By      string    // who changed it
	Reply   string    // the MTA's answer to the last release attempt, or why it was refused
}

// CheckResult is one check's result for the message, as in moat's log line.
type CheckResult struct {
	Check, Stage, Verdict, Reason string
	Score                         float64
}

// Header is one header field.
type Header struct{ Name, Value string }

// Record is what the quarantine keeps about a message besides its bytes.
type Record struct {
	ID                                            string // moat's reference id of the message (the ref in the log line)
	Mode                                          string // "store" or "hold"
	Time, Expires                                 time.Time
	QueueID, ClientAddr, ClientName, Helo, Sender string
	Recipients                                    []Recipient
	Kind                                          Kind
	Reasons                                       []string
	Score                                         float64
	Checks                                        []CheckResult
	Size                                          int64
	From, Subject                                 string   // decoded (RFC 2047) from the header block, for lists
	AddedHeaders                                  []Header // the header fields moat would have added (its verdict headers)
}

// Query selects records for List.
type Query struct {
	Sender, Rcpt, Text string // substrings, case-insensitive; Text matches subject, From: and sender
	RcptExact          string // only records with this recipient (digest sessions); "" for any
	Kind               Kind   // "" for any
	Since, Until       time.Time
	State              State  // "" (default): records with at least one recipient held
	Sort               string // "time" (default), "sender", "subject", "score", "size"
	Desc               bool
	Offset, Limit      int // Limit 0: 50
}

// Actor is who acts: an administrator, or a recipient through a digest link (Recipient set: only mail to that
// address, only that recipient's copy).
type Actor struct {
	Name      string
	Admin     bool
	Recipient string
}

var errNotYet = errors.New("quarantine: not implemented yet")

// List returns the records that match qu (a page of them) and how many match in all.
func (q *Quarantine) List(ctx context.Context, qu Query) (recs []Record, total int, err error) {
	return nil, 0, errNotYet
}

// Get returns the record of id, or ErrNotFound.
func (q *Quarantine) Get(ctx context.Context, id string) (Record, error) { return Record{}, errNotYet }

// Open returns the message exactly as received, byte for byte (moat's added headers are in Record.AddedHeaders).
func (q *Quarantine) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	return nil, errNotYet
}

// Release re-injects the message to release_via for rcpts (nil: every held recipient; an Actor with Recipient
// set: only that one) and marks each released only after the MTA answered 250 for it.
func (q *Quarantine) Release(ctx context.Context, id string, rcpts []string, by Actor) ([]Recipient, error) {
	return nil, errNotYet
}

// Delete marks rcpts' copies deleted (nil: every held recipient); the bytes go once no recipient is held.
func (q *Quarantine) Delete(ctx context.Context, id string, rcpts []string, by Actor) error {
	return errNotYet
}

// MarkSpam tells spamd the message is spam (TELL) and deletes it.
func (q *Quarantine) MarkSpam(ctx context.Context, id string, by Actor) error { return errNotYet }

// MarkHam releases the message, tells spamd it is ham and, with whitelist, adds the sender to the learned
// white list (consulted by senderlists with SPF/DKIM proof).
func (q *Quarantine) MarkHam(ctx context.Context, id string, rcpts []string, whitelist bool, by Actor) ([]Recipient, error) {
	return nil, errNotYet
}

// Forget tells spamd to forget what it learned from the message.
func (q *Quarantine) Forget(ctx context.Context, id string, by Actor) error { return errNotYet }

// Purge deletes expired records and, over max_size, the oldest ones; it returns how many went.
func (q *Quarantine) Purge(ctx context.Context, now time.Time) (int, error) { return 0, errNotYet }

// HeldRecipients lists the distinct held recipients in local domains with mail held since `since` (digests).
func (q *Quarantine) HeldRecipients(ctx context.Context, since time.Time) ([]string, error) {
	return nil, errNotYet
}
