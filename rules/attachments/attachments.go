// Package attachments implements the "attachments" check: at end of message it walks the MIME structure of
// the spooled message, streaming, and bars dangerous attachments by file name, by declared and sniffed type,
// by the tricks used to disguise them, and by what archives and Office documents hold.
//
// # What it looks at
//
// Every leaf part of the message (nested multiparts and message/rfc822 parts included) is an object. Its
// names come from Content-Disposition filename and Content-Type name, decoded every way a mail client may
// decode them (RFC 2231 continuations and charsets, RFC 2047 encoded words, percent escapes), then
// normalised ([NormalizeName]): last path element, bidirectional controls and other invisible characters
// removed, NFKC, lower case, trailing dots and spaces removed. Its content is decoded (base64,
// quoted-printable) and its type sniffed from the first 4 KiB. Archives (zip, tar, gzip, bzip2, rar, 7z) are
// opened from memory, or from a temporary file past memory_buffer, and each file in them is an object too,
// nested archives to archive_depth; no file is ever extracted. OLE and OOXML Office documents are looked
// into for VBA macros.
//
// # Rules
//
// names and types are ordered lists in the barring syntax ('*' one or more characters, '?' one, '$' a
// letter, '%' a digit, '~' excludes, the last matching line decides), names matched against each normalised
// name, types against the declared and the sniffed type. The built-in lists (defaultNames, defaultTypes)
// come first unless turned off, so a configured "~*.iso" lifts one default bar. Besides the lists:
// double extensions ("invoice.pdf.exe"), a name whose extension contradicts the sniffed content, a name with
// bidirectional controls, encrypted archives, macros, archive bounds (zip bombs), unreadable archives, broken
// MIME structure, and MIME walk limits each have an action: reject (554 5.7.1, or 554 5.6.0 for the MIME
// structure), quarantine, score:N or accept.
//
// # Decision
//
// Each kind of hit gives one finding (the first hit of that kind, the others counted in its detail) whose
// Status and Reason carry "kind:part:name:rule", so that the X-Moat trace and the log line say which part,
// which name and which rule. With [[checks.attachments.domain]] overrides, each accepted recipient's domain
// picks its rule set and the strictest outcome among the rule sets of the message's recipients applies,
// since one message has one answer at end of message.
package attachments

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
)

// Name is the check's registered name.
const Name = "attachments"

func init() { policy.Register(Name, setup) }

// Reasons: the first word of a finding's reason.
const (
	ReasonName       = "banned-name"
	ReasonType       = "banned-type"
	ReasonDoubleExt  = "double-extension"
	ReasonMismatch   = "type-mismatch"
	ReasonBidi       = "bidi-name"
	ReasonEncrypted  = "encrypted-archive"
	ReasonMacro      = "macro"
	ReasonArchiveLim = "archive-limit"
	ReasonUnreadable = "unreadable-archive"
	ReasonMalformed  = "malformed-mime"
	ReasonMIMELimit  = "mime-limit"
	StatusClean      = policy.Status("clean")
)

// Config is the [checks.attachments] table.
type Config struct {
	// DefaultNames puts the built-in list of dangerous extensions before Names (default true).
	DefaultNames bool     `toml:"default_names"`
	Names        []string `toml:"names"`
	NamesFile    string   `toml:"names_file"`
	NamesAction  string   `toml:"names_action"`
	// DefaultTypes puts the built-in list of executable types before Types (default true).
	DefaultTypes bool     `toml:"default_types"`
	Types        []string `toml:"types"`
	TypesFile    string   `toml:"types_file"`
	TypesAction  string   `toml:"types_action"`

	DoubleExtension   string `toml:"double_extension"`
	TypeMismatch      string `toml:"type_mismatch"`
	BidiName          string `toml:"bidi_name"`
	EncryptedArchive  string `toml:"encrypted_archive"`
	Macros            string `toml:"macros"`
	ArchiveLimit      string `toml:"archive_limit"`
	UnreadableArchive string `toml:"unreadable_archive"`
	Malformed         string `toml:"malformed"`
	MIMELimit         string `toml:"mime_limit"`

	// WhitelistedExempt skips the check for white-listed senders (default false: they are checked, like the
	// virus scan).
	WhitelistedExempt bool `toml:"whitelisted_exempt"`

	MaxDepth      int         `toml:"max_depth"`
	MaxParts      int         `toml:"max_parts"`
	MaxHeaderSize config.Size `toml:"max_header_size"`

	ArchiveDepth      int         `toml:"archive_depth"`
	ArchiveMaxEntries int         `toml:"archive_max_entries"`
	ArchiveMaxTotal   config.Size `toml:"archive_max_total"`
	ArchiveMaxRatio   int         `toml:"archive_max_ratio"`
	ArchiveMaxSize    config.Size `toml:"archive_max_size"`
	MemoryBuffer      config.Size `toml:"memory_buffer"`
	TempDir           string      `toml:"temp_dir"`

	Domain []DomainConfig `toml:"domain"`
}

// DomainConfig is one [[checks.attachments.domain]] table: recipient domains and what changes for them.
// Names and Types lines are read after the main lists (so they can add bars or lift them with '~'); each
// action key set here replaces the main one.
type DomainConfig struct {
	Domains     []string `toml:"domains"`
	DomainsFile string   `toml:"domains_file"`
	Names       []string `toml:"names"`
	NamesFile   string   `toml:"names_file"`
	Types       []string `toml:"types"`
	TypesFile   string   `toml:"types_file"`

	NamesAction       *string `toml:"names_action"`
	TypesAction       *string `toml:"types_action"`
	DoubleExtension   *string `toml:"double_extension"`
	TypeMismatch      *string `toml:"type_mismatch"`
	BidiName          *string `toml:"bidi_name"`
	EncryptedArchive  *string `toml:"encrypted_archive"`
	Macros            *string `toml:"macros"`
	ArchiveLimit      *string `toml:"archive_limit"`
	UnreadableArchive *string `toml:"unreadable_archive"`
	Malformed         *string `toml:"malformed"`
	MIMELimit         *string `toml:"mime_limit"`
}

// DefaultConfig returns the defaults of the table.
func DefaultConfig() Config {
	return Config{
		DefaultNames: true, NamesAction: "reject",
		DefaultTypes: true, TypesAction: "reject",
		DoubleExtension:   "reject",
		TypeMismatch:      "score:3",
		BidiName:          "reject",
		EncryptedArchive:  "score:4",
		Macros:            "score:4",
		ArchiveLimit:      "reject",
		UnreadableArchive: "score:2",
		Malformed:         "score:3",
		MIMELimit:         "reject",
		MaxDepth:          20,
		MaxParts:          2000,
		MaxHeaderSize:     100 << 10, // Postfix's header_size_limit
		ArchiveDepth:      3,
		ArchiveMaxEntries: 10000,
		ArchiveMaxTotal:   200 << 20,
		ArchiveMaxRatio:   100,
		ArchiveMaxSize:    50 << 20,
		MemoryBuffer:      1 << 20,
	}
}

// ruleset is what one recipient domain is checked against.
type ruleset struct {
	label        string // "default" or the override's first domain
	domains      domainSet
	names, types orderedList
	acts         map[string]act // by reason
}

// Check is the configured attachments check.
type Check struct {
	kind      policy.Kind
	mimeLim   Limits
	arcLim    ArchiveLimits
	main      *ruleset
	overrides []*ruleset
	log       *slog.Logger
}

func setup(sec *config.Section, env *policy.Env) (policy.Check, error) {
	cfg := DefaultConfig()
	if err := sec.Decode(&cfg); err != nil {
		return nil, err
	}
	c, err := New(sec, cfg)
	if err != nil {
		return nil, err
	}
	if env != nil && env.Logger != nil {
		c.log = env.Logger
	}
	return c, nil
}

// New builds the check from a decoded configuration; sec locates errors.
func New(sec *config.Section, cfg Config) (*Check, error) {
	c := &Check{kind: policy.KindVirus, log: slog.Default()}
	if cfg.WhitelistedExempt {
		c.kind = policy.KindAntispam
	}
	for key, v := range map[string]int{"max_depth": cfg.MaxDepth, "max_parts": cfg.MaxParts, "archive_depth": cfg.ArchiveDepth,
		"archive_max_entries": cfg.ArchiveMaxEntries, "archive_max_ratio": cfg.ArchiveMaxRatio} {
		if v < 1 {
			return nil, sec.Errorf(key, "must be at least 1")
		}
	}
	for key, v := range map[string]config.Size{"max_header_size": cfg.MaxHeaderSize, "archive_max_total": cfg.ArchiveMaxTotal,
		"archive_max_size": cfg.ArchiveMaxSize} {
		if v < 1024 {
			return nil, sec.Errorf(key, "must be at least 1K")
		}
	}
	if cfg.MaxHeaderSize > lineBuf*64 {
		return nil, sec.Errorf("max_header_size", "must be at most %dK", lineBuf*64>>10)
	}
	tempDir := cfg.TempDir
	if tempDir != "" {
		tempDir = sec.File().Abs(tempDir)
		if st, err := os.Stat(tempDir); err != nil || !st.IsDir() {
			return nil, sec.Errorf("temp_dir", "%q is not a directory", tempDir)
		}
	}
	c.mimeLim = Limits{MaxDepth: cfg.MaxDepth, MaxParts: cfg.MaxParts, MaxHeaderBytes: int(cfg.MaxHeaderSize)}
	c.arcLim = ArchiveLimits{Depth: cfg.ArchiveDepth, MaxEntries: cfg.ArchiveMaxEntries, MaxTotal: int64(cfg.ArchiveMaxTotal),
		MaxRatio: int64(cfg.ArchiveMaxRatio), MaxSize: int64(cfg.ArchiveMaxSize), MemoryBuffer: int64(cfg.MemoryBuffer), TempDir: tempDir}

	main := &ruleset{label: "default", acts: map[string]act{}}
	if cfg.DefaultNames {
		main.names = main.names.with(builtinList(defaultNames))
	}
	if cfg.DefaultTypes {
		main.types = main.types.with(builtinList(defaultTypes))
	}
	names, err := loadList(sec, "names", cfg.Names, "names_file", cfg.NamesFile)
	if err != nil {
		return nil, err
	}
	main.names = main.names.with(names)
	types, err := loadList(sec, "types", cfg.Types, "types_file", cfg.TypesFile)
	if err != nil {
		return nil, err
	}
	main.types = main.types.with(types)
	for _, k := range []struct {
		key, reason, value string
	}{
		{"names_action", ReasonName, cfg.NamesAction}, {"types_action", ReasonType, cfg.TypesAction},
		{"double_extension", ReasonDoubleExt, cfg.DoubleExtension}, {"type_mismatch", ReasonMismatch, cfg.TypeMismatch},
		{"bidi_name", ReasonBidi, cfg.BidiName}, {"encrypted_archive", ReasonEncrypted, cfg.EncryptedArchive},
		{"macros", ReasonMacro, cfg.Macros}, {"archive_limit", ReasonArchiveLim, cfg.ArchiveLimit},
		{"unreadable_archive", ReasonUnreadable, cfg.UnreadableArchive}, {"malformed", ReasonMalformed, cfg.Malformed},
		{"mime_limit", ReasonMIMELimit, cfg.MIMELimit},
	} {
		a, err := parseAct(sec, k.key, k.value, 1)
		if err != nil {
			return nil, err
		}
		main.acts[k.reason] = a
	}
	c.main = main
	for i, d := range cfg.Domain {
		rs, err := c.override(sec, fmt.Sprintf("domain[%d]", i), d)
		if err != nil {
			return nil, err
		}
		c.overrides = append(c.overrides, rs)
	}
	return c, nil
}

// override builds the rule set of one [[checks.attachments.domain]] table on top of the main one.
func (c *Check) override(sec *config.Section, at string, d DomainConfig) (*ruleset, error) {
	key := func(k string) string { return at + "." + k }
	doms, err := loadDomains(sec, key("domains"), d.Domains, key("domains_file"), d.DomainsFile)
	if err != nil {
		return nil, err
	}
	if doms.len() == 0 {
		return nil, sec.Errorf(key("domains"), "a domain override needs domains or domains_file")
	}
	label := "domain"
	if len(d.Domains) > 0 {
		label = strings.ToLower(d.Domains[0])
	}
	rs := &ruleset{label: label, domains: doms, names: c.main.names, types: c.main.types, acts: map[string]act{}}
	for r, a := range c.main.acts {
		rs.acts[r] = a
	}
	names, err := loadList(sec, key("names"), d.Names, key("names_file"), d.NamesFile)
	if err != nil {
		return nil, err
	}
	rs.names = rs.names.with(names)
	types, err := loadList(sec, key("types"), d.Types, key("types_file"), d.TypesFile)
	if err != nil {
		return nil, err
	}
	rs.types = rs.types.with(types)
	for _, k := range []struct {
		key, reason string
		value       *string
	}{
		{"names_action", ReasonName, d.NamesAction}, {"types_action", ReasonType, d.TypesAction},
		{"double_extension", ReasonDoubleExt, d.DoubleExtension}, {"type_mismatch", ReasonMismatch, d.TypeMismatch},
		{"bidi_name", ReasonBidi, d.BidiName}, {"encrypted_archive", ReasonEncrypted, d.EncryptedArchive},
		{"macros", ReasonMacro, d.Macros}, {"archive_limit", ReasonArchiveLim, d.ArchiveLimit},
		{"unreadable_archive", ReasonUnreadable, d.UnreadableArchive}, {"malformed", ReasonMalformed, d.Malformed},
		{"mime_limit", ReasonMIMELimit, d.MIMELimit},
	} {
		if k.value == nil {
			continue
		}
		a, err := parseAct(sec, key(k.key), *k.value, 1)
		if err != nil {
			return nil, err
		}
		rs.acts[k.reason] = a
	}
	return rs, nil
}

// Name implements policy.Check.
func (c *Check) Name() string { return Name }

// Kind implements policy.Check: like the virus scan, white-listed senders are checked, unless
// whitelisted_exempt makes this an anti-spam check.
func (c *Check) Kind() policy.Kind { return c.kind }

// Message implements policy.MessageChecker.
func (c *Check) Message(ctx context.Context, s *policy.Session, m policy.Message) []policy.Finding {
	facts, err := Inspect(ctx, m.Open(), c.mimeLim, c.arcLim)
	if err != nil {
		reason := "read-error"
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			reason = "timeout"
		}
		f := policy.Tempfailf(policy.StatusTempError, reason, 451, "4.3.0",
			"Attachment check could not complete, please try again later")
		f.Err = fmt.Errorf("attachments: %w", err)
		return []policy.Finding{f}
	}
	return c.Decide(facts, c.rulesets(s))
}

// rulesets returns the rule sets of the accepted recipients' domains (the main one for recipients that no
// override names).
func (c *Check) rulesets(s *policy.Session) []*ruleset {
	if s == nil || len(c.overrides) == 0 {
		return []*ruleset{c.main}
	}
	seen := map[*ruleset]bool{}
	var out []*ruleset
	for _, r := range s.AcceptedRcpts() {
		rs := c.main
		for _, o := range c.overrides {
			if o.domains.contains(r.Addr.Domain) {
				rs = o
				break
			}
		}
		if !seen[rs] {
			seen[rs] = true
			out = append(out, rs)
		}
	}
	if len(out) == 0 {
		out = []*ruleset{c.main}
	}
	return out
}

// hit is one rule that matched.
type hit struct {
	reason string
	where  string
	name   string // the raw name, "" for a part without one
	rule   string // the list line, or what was found
}

// Decide applies the rule sets to the facts and returns the findings of the strictest one.
func (c *Check) Decide(facts *Facts, sets []*ruleset) []policy.Finding {
	var best []policy.Finding
	var bestSet *ruleset
	bestScore := -1e18
	for _, rs := range sets {
		fs, strength := rs.decide(facts)
		if strength > bestScore {
			best, bestSet, bestScore = fs, rs, strength
		}
	}
	if len(sets) > 1 {
		for i := range best {
			best[i].Detail += " (rules of " + bestSet.label + ")"
		}
	}
	return best
}

func (rs *ruleset) decide(facts *Facts) ([]policy.Finding, float64) {
	hits := rs.hits(facts)
	if len(hits) == 0 {
		return []policy.Finding{{Status: StatusClean,
			Detail: fmt.Sprintf("%d MIME parts, %d objects checked", facts.Parts, len(facts.Objects))}}, -1e12
	}
	// One finding per kind of hit, in a fixed order, the first hit of each kind named.
	byReason := map[string][]hit{}
	var order []string
	for _, h := range hits {
		if _, ok := byReason[h.reason]; !ok {
			order = append(order, h.reason)
		}
		byReason[h.reason] = append(byReason[h.reason], h)
	}
	sort.SliceStable(order, func(i, j int) bool { return rs.acts[order[i]].strength() > rs.acts[order[j]].strength() })
	var out []policy.Finding
	strength := 0.0
	for _, reason := range order {
		hs := byReason[reason]
		h := hs[0]
		a := rs.acts[reason]
		// kind:part:name:rule; an archive entry's name is in its part ("2:docs.zip/a.exe").
		name := h.name
		if strings.Contains(h.where, ":") {
			name = ""
		}
		tok := reason + ":" + token(h.where) + ":" + token(name) + ":" + token(h.rule)
		f := policy.Finding{Status: policy.Status(reason), Reason: tok}
		f.Detail = fmt.Sprintf("%s in %s", reason, h.where)
		if h.name != "" {
			f.Detail += fmt.Sprintf(" name \"%s\"", escapeName(h.name))
		}
		f.Detail += " by " + h.rule + ", action " + a.String()
		if len(hs) > 1 {
			f.Detail += fmt.Sprintf("; %d more of this kind", len(hs)-1)
		}
		a.apply(&f, reply(h))
		if f.Verdict == policy.None {
			f.Status = policy.Status(tok) // the trace and the log line show a non-acting finding's status only
			f.Tests = []string{"MOAT_ATTACH_" + strings.ToUpper(strings.ReplaceAll(reason, "-", "_"))}
		}
		switch {
		case a.verdict() != policy.None:
			strength = max(strength, a.strength())
		default:
			strength += max(a.strength(), 0)
		}
		out = append(out, f)
	}
	return out, strength
}

// reply is the rejection of a hit: 554 5.7.1 naming the file (escaped), or 554 5.6.0 for the MIME structure.
func reply(h hit) policy.Reply {
	switch h.reason {
	case ReasonMalformed:
		return policy.Reply{Code: 554, Enhanced: "5.6.0", Text: policy.ReplySafe("Malformed MIME structure: " + h.rule)}
	case ReasonMIMELimit:
		return policy.Reply{Code: 554, Enhanced: "5.6.0", Text: policy.ReplySafe("MIME structure too complex to check: " + h.rule)}
	}
	what := "part " + h.where
	if part, inner, ok := strings.Cut(h.where, ":"); ok {
		what = fmt.Sprintf("\"%s\" in the archive of part %s", escapeName(inner), part)
	} else if h.name != "" {
		what = fmt.Sprintf("\"%s\" (part %s)", escapeName(h.name), h.where)
	}
	text := what + ": attachment not allowed"
	switch h.reason {
	case ReasonEncrypted:
		text = what + ": encrypted archive not allowed"
	case ReasonMacro:
		text = what + ": document with macros not allowed"
	case ReasonArchiveLim:
		text = what + ": archive not allowed (" + h.rule + ")"
	case ReasonUnreadable:
		text = what + ": unreadable archive not allowed"
	}
	return policy.Reply{Code: 554, Enhanced: "5.7.1", Text: policy.ReplySafe(text)}
}

// hits applies the rules to every object.
func (rs *ruleset) hits(facts *Facts) []hit {
	var out []hit
	for i := range facts.Objects {
		o := &facts.Objects[i]
		out = append(out, rs.objectHits(o)...)
	}
	if len(facts.Defects) > 0 {
		rule := facts.Defects[0]
		if len(facts.Defects) > 1 {
			rule += fmt.Sprintf(" (and %d more)", len(facts.Defects)-1)
		}
		out = append(out, hit{reason: ReasonMalformed, where: "message", rule: rule})
	}
	if facts.Limit != "" {
		out = append(out, hit{reason: ReasonMIMELimit, where: "message", rule: facts.Limit})
	}
	var acting []hit
	for _, h := range out {
		if a := rs.acts[h.reason]; a.a.Acts() {
			acting = append(acting, h)
		}
	}
	return acting
}

func (rs *ruleset) objectHits(o *Object) []hit {
	var out []hit
	for _, n := range o.Names {
		if n.Norm == "" {
			continue
		}
		if barred, rule := rs.names.match(n.Norm); barred {
			out = append(out, hit{ReasonName, o.Where, n.Raw, "names=" + rule})
		}
		if n.Bidi {
			out = append(out, hit{ReasonBidi, o.Where, n.Raw, "bidirectional control character in the name"})
		}
		if len(n.Exts) >= 2 {
			last, prev := n.Exts[len(n.Exts)-1], n.Exts[len(n.Exts)-2]
			if executableExt[last] && decoyExt[prev] {
				out = append(out, hit{ReasonDoubleExt, o.Where, n.Raw, "." + prev + "." + last})
			}
		}
		if want, ok := extTypes[n.Ext()]; ok && o.Sniffed != "" && !genericType[o.Sniffed] && !hasType(want, o.Sniffed) {
			out = append(out, hit{ReasonMismatch, o.Where, n.Raw, "." + n.Ext() + " is " + o.Sniffed})
		}
	}
	name := ""
	if len(o.Names) > 0 {
		name = o.Names[len(o.Names)-1].Raw // the most decoded form
	}
	for _, t := range []struct{ label, typ string }{{"declared", o.Declared}, {"sniffed", o.Sniffed}} {
		if t.typ == "" {
			continue
		}
		if barred, rule := rs.types.match(t.typ); barred {
			out = append(out, hit{ReasonType, o.Where, name, t.label + "=" + rule})
			break
		}
	}
	if o.Encrypted {
		out = append(out, hit{ReasonEncrypted, o.Where, name, "encrypted"})
	}
	if o.Macro != "" {
		out = append(out, hit{ReasonMacro, o.Where, name, o.Macro})
	}
	if o.Limit != "" {
		out = append(out, hit{ReasonArchiveLim, o.Where, name, o.Limit})
	}
	if o.Unread != "" {
		out = append(out, hit{ReasonUnreadable, o.Where, name, o.Unread})
	}
	return out
}

func hasType(list []string, t string) bool {
	for _, x := range list {
		if x == t {
			return true
		}
	}
	return false
}
