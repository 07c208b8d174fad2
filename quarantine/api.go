package quarantine

import (
	"errors"
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
