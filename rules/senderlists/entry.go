package senderlists

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/lists"
	"github.com/moatmail/moat/internal/wildcard"
	"github.com/moatmail/moat/policy"
)

// ErrBadEntry is returned for a malformed list line.
var ErrBadEntry = errors.New("senderlists: malformed entry")

// Proof is a set of ways a white-list entry can be proven (any one suffices); zero means no proof is needed.
type Proof uint8

// The proofs.
const (
	ProofSPF Proof = 1 << iota
	ProofDKIM
	ProofDMARC
	ProofAny  = ProofSPF | ProofDKIM | ProofDMARC
	ProofNone = Proof(0)
)

func (p Proof) String() string {
	if p == ProofNone {
		return "none"
	}
	if p == ProofAny {
		return "any"
	}
	var parts []string
	for _, x := range []struct {
		p Proof
		n string
	}{{ProofSPF, "spf"}, {ProofDKIM, "dkim"}, {ProofDMARC, "dmarc"}} {
		if p&x.p != 0 {
			parts = append(parts, x.n)
		}
	}
	return strings.Join(parts, ",")
}

// ParseProof parses "none", "any" or a comma list of "spf", "dkim" and "dmarc".
func ParseProof(s string) (Proof, error) {
	switch s {
	case "none":
		return ProofNone, nil
	case "any":
		return ProofAny, nil
	}
	var p Proof
	for _, part := range strings.Split(s, ",") {
		switch strings.TrimSpace(part) {
		case "spf":
			p |= ProofSPF
		case "dkim":
			p |= ProofDKIM
		case "dmarc":
			p |= ProofDMARC
		default:
			return 0, fmt.Errorf("%w: proof %q (want none, any, or a comma list of spf, dkim, dmarc)", ErrBadEntry, s)
		}
	}
	return p, nil
}

type entryKind uint8

const (
	kindAddress entryKind = iota
	kindDomain            // exact domain
	kindParent            // domain and its subdomains (".example.com")
	kindNet
	kindPattern
	kindNull // "<>": the null sender
)

// Entry is one line of a black or white list.
type Entry struct {
	kind    entryKind
	text    string // the entry as written, without options
	value   string // address (lower case) or domain
	prefix  netip.Prefix
	pattern *wildcard.Pattern
	Proof   Proof
	Line    config.ListLine
	// proofSet says whether the line wrote proof=… (otherwise Proof is a default).
	proofSet bool
}

// String names the entry and where it comes from.
func (e *Entry) String() string {
	return fmt.Sprintf("%q (%s:%d)", e.text, e.Line.Source, e.Line.Line)
}

// defaults are the proofs entries get when the line does not say.
type defaults struct {
	domain, address Proof
}

// parseEntry parses one line: an address, a domain, ".domain", an IP or CIDR, a barring pattern, or "<>",
// then optionally "proof=…" (white lists only).
func parseEntry(l config.ListLine, white bool, def defaults) (*Entry, error) {
	fields := strings.Fields(l.Text)
	if len(fields) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadEntry)
	}
	e := &Entry{text: fields[0], Line: l}
	proofSet := false
	for _, opt := range fields[1:] {
		v, ok := strings.CutPrefix(opt, "proof=")
		if !ok {
			return nil, fmt.Errorf("%w: unknown option %q (only proof=… is known)", ErrBadEntry, opt)
		}
		if !white {
			return nil, fmt.Errorf("%w: proof= only applies to white-list entries", ErrBadEntry)
		}
		p, err := ParseProof(v)
		if err != nil {
			return nil, err
		}
		e.Proof, proofSet = p, true
	}
	e.proofSet = proofSet
	t := fields[0]
	switch {
	case t == "<>":
		e.kind = kindNull
		// The null sender has no domain, so no proof can ever hold for it (and SPF of the HELO name says
		// nothing about who sent a bounce). White-listing bounces skips every anti-spam check for all of them:
		// the entry must say so with proof=none.
		if white && !proofSet {
			return nil, fmt.Errorf("%w: the null sender cannot be proven; write \"<> proof=none\" to white-list every bounce without proof", ErrBadEntry)
		}
		if e.Proof != ProofNone {
			return nil, fmt.Errorf("%w: the null sender has no domain, so proof=%s can never hold; only proof=none", ErrBadEntry, e.Proof)
		}
	case isIP(t):
		p, err := lists.ParsePrefix(t)
		if err != nil {
			return nil, err
		}
		e.kind, e.prefix = kindNet, p
		if proofSet && e.Proof != ProofNone {
			return nil, fmt.Errorf("%w: an IP entry needs no proof", ErrBadEntry)
		}
		return e, nil
	case wildcard.IsPattern(t):
		p, err := wildcard.Compile(t)
		if err != nil {
			return nil, err
		}
		e.kind, e.pattern = kindPattern, p
		if !proofSet {
			e.Proof = def.domain
		}
	case strings.Contains(t, "@"):
		a, err := addr.Parse(t)
		if err != nil || a.Null() || a.Domain == "" || a.Route != "" {
			return nil, fmt.Errorf("%w: bad address %q", ErrBadEntry, t)
		}
		e.kind, e.value = kindAddress, addressKey(a)
		if !proofSet {
			e.Proof = def.address
		}
	default:
		parent := strings.HasPrefix(t, ".")
		d := lists.NewDomains()
		if err := d.Add(t); err != nil {
			return nil, err
		}
		e.kind, e.value = kindDomain, addr.Domain(strings.TrimPrefix(t, "."))
		if parent {
			e.kind = kindParent
		}
		if !proofSet {
			e.Proof = def.domain
		}
	}
	return e, nil
}

func isIP(s string) bool {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// addressKey is the form addresses are compared in on these lists: the whole address case-insensitively.
func addressKey(a addr.Address) string {
	return strings.ToLower(a.Local) + "@" + addr.Domain(a.Domain)
}

// sender is what an entry is matched against.
type sender struct {
	addr    addr.Address
	key     string // addressKey, "" for the null sender
	domain  string // normalized domain, "" for the null sender
	subject wildcard.Subject
	ip      netip.Addr
}

func newSender(s *policy.Session) sender {
	out := sender{addr: s.From, ip: s.ClientIP.Unmap(), subject: wildcard.NewSubject(wildcard.SubjectOf(s.From))}
	if !s.From.Null() {
		out.domain = addr.Domain(s.From.Domain)
		if out.domain != "" {
			out.key = addressKey(s.From)
		}
	}
	return out
}

func (e *Entry) matches(s sender) bool {
	switch e.kind {
	case kindNull:
		return s.addr.Null()
	case kindNet:
		return s.ip.IsValid() && e.prefix.Contains(s.ip)
	case kindPattern:
		return e.pattern.MatchSubject(s.subject)
	case kindAddress:
		return s.key != "" && s.key == e.value
	case kindDomain:
		return s.domain != "" && s.domain == e.value
	case kindParent:
		return s.domain == e.value || strings.HasSuffix(s.domain, "."+e.value)
	}
	return false
}

// List is one black or white list, in file order. Address and domain entries are indexed, so that a lookup
// costs a few map probes plus one test per IP, pattern and null-sender entry, however long the list.
type List struct {
	entries  []*Entry
	byAddr   map[string][]int // address entries by addressKey
	byDomain map[string][]int // exact domain entries
	byParent map[string][]int // ".domain" entries
	linear   []int            // IP, pattern and null-sender entries, tested one by one
}

func (l *List) add(e *Entry) {
	if l.byAddr == nil {
		l.byAddr, l.byDomain, l.byParent = map[string][]int{}, map[string][]int{}, map[string][]int{}
	}
	i := len(l.entries)
	l.entries = append(l.entries, e)
	switch e.kind {
	case kindAddress:
		l.byAddr[e.value] = append(l.byAddr[e.value], i)
	case kindDomain:
		l.byDomain[e.value] = append(l.byDomain[e.value], i)
	case kindParent:
		l.byParent[e.value] = append(l.byParent[e.value], i)
	default:
		l.linear = append(l.linear, i)
	}
}

func parseList(lines []config.ListLine, white bool, def defaults) (*List, error) {
	l := &List{}
	for _, line := range lines {
		e, err := parseEntry(line, white, def)
		if err != nil {
			return nil, &lists.LineError{Line: line, Err: err}
		}
		l.add(e)
	}
	return l, nil
}

// Len is the number of entries.
func (l *List) Len() int {
	if l == nil {
		return 0
	}
	return len(l.entries)
}

// matching returns the entries that match, in list order.
func (l *List) matching(s sender) []*Entry {
	if l == nil || len(l.entries) == 0 {
		return nil
	}
	var idx []int
	if s.key != "" {
		idx = append(idx, l.byAddr[s.key]...)
	}
	if s.domain != "" {
		idx = append(idx, l.byDomain[s.domain]...)
		for d := s.domain; ; {
			idx = append(idx, l.byParent[d]...)
			i := strings.IndexByte(d, '.')
			if i < 0 {
				break
			}
			d = d[i+1:]
		}
	}
	for _, i := range l.linear {
		if l.entries[i].matches(s) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	sort.Ints(idx)
	out := make([]*Entry, 0, len(idx))
	for _, i := range idx {
		if len(out) == 0 || out[len(out)-1] != l.entries[i] {
			out = append(out, l.entries[i])
		}
	}
	return out
}
