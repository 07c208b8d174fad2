// Package barring implements the barring check: ordered wildcard lists of envelope senders and recipients
// that are refused with 550 5.7.1 and the administrator's text, at MAIL and at RCPT time.
//
// # Pattern language
//
// One pattern a line, matched against the whole address, case-insensitively:
//
//   - one or more characters
//     ?  exactly one character
//     $  one letter A-Z, any case
//     %  one digit 0-9
//
// Every other character matches itself. There is no escape: '*', '?', '$' and '%' are always wildcards.
// Addresses are matched as local@domain, the domain lower-cased without a trailing dot and international names
// in A-label form (as relay and senderlists compare them; a pattern's domain is converted too), a quoted local part
// with its quotes (so `"*@*"@*` finds quoted routing), no source route; the null sender is "<>".
//
// # Order
//
// A line starting with '~' excludes. The list is read top to bottom; each line that matches sets the verdict
// to barred (plain line) or not barred ('~' line), and the last matching line decides:
//
//	*@netcom.com
//	*@hotmail.com
//	~friend@hotmail.com
//	~boss@netcom.com
//
// bars everything from both domains except the two named addresses.
//
// # Cost
//
// Matching never backtracks: see [Pattern]. A list is checked from its last line up and stops at the first
// match.
package barring

import (
	"context"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/lists"
	"github.com/moatmail/moat/internal/wildcard"
	"github.com/moatmail/moat/policy"
)

// Name is the check's registered name.
const Name = "barring"

func init() { policy.Register(Name, setup) }

// Config is the [checks.barring] table.
type Config struct {
	// Senders and SendersFile list barred envelope senders (inline entries first, then the file's).
	Senders     []string `toml:"senders"`
	SendersFile string   `toml:"senders_file"`
	// Recipients and RecipientsFile list barred recipients.
	Recipients     []string `toml:"recipients"`
	RecipientsFile string   `toml:"recipients_file"`
	// SenderText and RecipientText are the reply texts after "550 5.7.1"; "{addr}" is replaced by the address.
	SenderText    string `toml:"sender_text"`
	RecipientText string `toml:"recipient_text"`
}

// DefaultConfig returns the defaults of the table.
func DefaultConfig() Config {
	return Config{
		SenderText:    "<{addr}>: sender address rejected by local policy",
		RecipientText: "<{addr}>: recipient address rejected by local policy",
	}
}

// Check is the barring check.
type Check struct {
	senders, recipients  *wildcard.List
	senderText, rcptText string
}

func setup(sec *config.Section, _ *policy.Env) (policy.Check, error) {
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(sec, cfg)
}

// New builds the check from a decoded configuration; sec locates errors.
func New(sec *config.Section, cfg Config) (*Check, error) {
	c := &Check{senderText: cfg.SenderText, rcptText: cfg.RecipientText}
	for _, t := range []struct{ key, text string }{{"sender_text", cfg.SenderText}, {"recipient_text", cfg.RecipientText}} {
		if strings.TrimSpace(t.text) == "" || strings.ContainsAny(t.text, "\r\n") {
			return nil, sec.Errorf(t.key, "must be one non-empty line")
		}
	}
	var err error
	if c.senders, err = load(sec, "senders", cfg.Senders, "senders_file", cfg.SendersFile); err != nil {
		return nil, err
	}
	if c.recipients, err = load(sec, "recipients", cfg.Recipients, "recipients_file", cfg.RecipientsFile); err != nil {
		return nil, err
	}
	if c.senders.Len() == 0 && c.recipients.Len() == 0 {
		return nil, sec.Errorf("", "no sender or recipient patterns: set senders, senders_file, recipients or recipients_file")
	}
	return c, nil
}

func load(sec *config.Section, key string, inline []string, fileKey, file string) (*wildcard.List, error) {
	l := &wildcard.List{}
	err := lists.Load(sec, key, inline, fileKey, file, func(lines []config.ListLine) error {
		more, err := wildcard.ParseList(lines)
		if err != nil {
			return err
		}
		l.Append(more)
		return nil
	})
	return l, err
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// Kind implements policy.Check: barring is access control and always runs.
func (c *Check) Kind() policy.Kind { return policy.KindAccess }

// Mail checks the envelope sender against the sender list.
func (c *Check) Mail(_ context.Context, s *policy.Session) []policy.Finding {
	return decide(c.senders, s.From, c.senderText, "barred-sender")
}

// Rcpt checks one recipient against the recipient list.
func (c *Check) Rcpt(_ context.Context, _ *policy.Session, r *policy.Recipient) []policy.Finding {
	return decide(c.recipients, r.Addr, c.rcptText, "barred-recipient")
}

func decide(l *wildcard.List, a addr.Address, text, reason string) []policy.Finding {
	if l.Len() == 0 {
		return nil
	}
	subject := wildcard.SubjectOf(a)
	barred, rule := l.Match(wildcard.NewSubject(subject))
	switch {
	case rule == nil:
		return []policy.Finding{{Status: policy.StatusNone}}
	case !barred:
		return []policy.Finding{{Status: policy.StatusPass, Reason: "excluded", Detail: "excluded by " + rule.String()}}
	}
	f := policy.Rejectf("barred", reason, 550, "5.7.1", "%s", strings.ReplaceAll(text, "{addr}", policy.ReplySafe(subject)))
	f.Detail = "barred by " + rule.String()
	return []policy.Finding{f}
}
