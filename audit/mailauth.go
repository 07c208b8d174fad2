package audit

import (
	"context"
	"crypto"
	"fmt"
	"strings"

	libspf "blitiri.com.ar/go/spf"

	"github.com/moatmail/moat/auth/dkim"
	"github.com/moatmail/moat/auth/dmarc"
	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/auth/spf"
)

// RFC 7208 section 4.6.4: at most 10 terms that cause DNS queries, and at most 2 of those answered with
// no records ("void lookups").
const (
	spfMaxLookups = 10
	spfMaxVoid    = 2
)

// txt returns the TXT records of name; not found is an empty list without error.
func (a *auditor) txt(ctx context.Context, name string) ([]string, error) {
	sctx, cancel := a.step(ctx)
	defer cancel()
	recs, err := a.res.LookupTXT(sctx, name)
	if resolver.IsNotFound(err) {
		return nil, nil
	}
	return recs, err
}

// spfRecords returns the SPF records at domain.
func (a *auditor) spfRecords(ctx context.Context, domain string) ([]string, error) {
	txts, err := a.txt(ctx, domain)
	var out []string
	for _, t := range txts {
		if spf.IsRecord(t) {
			out = append(out, t)
		}
	}
	return out, err
}

// spfCount is what walking an SPF record and its includes found.
type spfCount struct {
	lookups, voids int
	problems       []string
}

// walkSPF counts the DNS-querying terms and void lookups of rec (at domain) and of the records it includes
// or redirects to, as an evaluation that reaches every term would. path holds the domains being walked
// above this one: meeting one of them again is a loop, while the same include in two branches is counted
// twice, as an evaluation would.
func (a *auditor) walkSPF(ctx context.Context, domain string, rec *spf.Record, c *spfCount, path map[string]bool) {
	if len(path) > spfMaxLookups || c.lookups > spfMaxLookups || ctx.Err() != nil {
		return
	}
	for _, t := range rec.LookupTerms() {
		c.lookups++
		target := t.Value
		if i := strings.IndexByte(target, '/'); i >= 0 {
			target = target[:i]
		}
		if target == "" {
			target = domain
		}
		if strings.Contains(target, "%") {
			continue // a macro is expanded per message: its lookups cannot be counted here
		}
		switch t.Name {
		case "include", "redirect":
			if path[target] {
				c.problems = append(c.problems, fmt.Sprintf("%s includes %s, which includes it (a loop)", domain, target))
				continue
			}
			recs, err := a.spfRecords(ctx, target)
			if err != nil {
				c.problems = append(c.problems, fmt.Sprintf("%s: %v", target, err))
				continue
			}
			if len(recs) == 0 {
				c.voids++
				c.problems = append(c.problems, fmt.Sprintf("%s:%s has no SPF record", t.Name, target))
				continue
			}
			if len(recs) > 1 {
				c.problems = append(c.problems, fmt.Sprintf("%s has %d SPF records", target, len(recs)))
				continue
			}
			sub, err := spf.ParseRecord(recs[0])
			if err != nil {
				c.problems = append(c.problems, fmt.Sprintf("%s: %v", target, err))
				continue
			}
			path[target] = true
			a.walkSPF(ctx, target, sub, c, path)
			delete(path, target)
		case "a":
			sctx, cancel := a.step(ctx)
			_, err := a.res.LookupIPAddr(sctx, target)
			cancel()
			if resolver.IsNotFound(err) {
				c.voids++
			}
		case "mx":
			sctx, cancel := a.step(ctx)
			_, err := a.res.LookupMX(sctx, target)
			cancel()
			if resolver.IsNotFound(err) {
				c.voids++
			}
		}
	}
}

// checkSPF checks the domain's SPF record and that the MX addresses pass it.
func (a *auditor) checkSPF(ctx context.Context, mxs []*mxHost) {
	s := a.section("spf")
	recs, err := a.spfRecords(ctx, a.domain)
	if err != nil {
		s.fail("record", "make the domain's name servers answer", "SPF lookup failed: %v", err)
		return
	}
	switch len(recs) {
	case 0:
		s.fail("record", fmt.Sprintf("publish one TXT record at %s: \"v=spf1 mx -all\"", a.domain), "no SPF record")
		return
	case 1:
		s.pass("record", "one SPF record: %s", recs[0])
	default:
		s.fail("record", "merge them into one TXT record (RFC 7208 section 4.5: several records are a permerror)",
			"%d SPF records: %s", len(recs), strings.Join(recs, " | "))
		return
	}
	rec, err := spf.ParseRecord(recs[0])
	if err != nil {
		s.fail("syntax", "correct the term named (RFC 7208 section 5)", "%v", err)
		return
	}
	s.pass("syntax", "valid syntax")

	c := &spfCount{}
	a.walkSPF(ctx, a.domain, rec, c, map[string]bool{a.domain: true})
	if c.lookups > spfMaxLookups {
		s.fail("lookups", "flatten includes into ip4:/ip6: terms until at most 10 DNS-querying terms remain",
			"more than %d DNS-querying terms (include, a, mx, ptr, exists, redirect): %d counted", spfMaxLookups, c.lookups)
	} else {
		s.pass("lookups", "%d DNS-querying terms (limit %d)", c.lookups, spfMaxLookups)
	}
	if c.voids > spfMaxVoid {
		s.fail("void-lookups", "remove the terms whose names do not exist", "%d void lookups (limit %d)", c.voids, spfMaxVoid)
	} else {
		s.pass("void-lookups", "%d void lookups (limit %d)", c.voids, spfMaxVoid)
	}
	for _, p := range c.problems {
		s.warn("include", "fix or remove the term", "%s", p)
	}

	q, hasAll := rec.All()
	switch {
	case hasAll && (q == '-' || q == '~'):
		s.pass("all", "ends in %call", q)
	case !hasAll && rec.Redirect() != "":
		s.pass("all", "redirect=%s decides the default", rec.Redirect())
	case hasAll:
		s.fail("all", "end the record with -all (or ~all while testing)", "ends in %call: anyone may send as %s", q, a.domain)
	default:
		s.fail("all", "end the record with -all (or ~all while testing)", "no all term: the default is neutral")
	}

	for _, mx := range mxs {
		for _, ip := range mx.Addrs {
			sctx, cancel := a.step(ctx)
			res, err := spf.CheckHost(sctx, a.res, ip, mx.Name, "postmaster@"+a.domain)
			cancel()
			if res == libspf.Pass {
				s.pass("mx-pass", "%s (%s) passes SPF", ip, mx.Name)
				continue
			}
			detail := string(res)
			if err != nil {
				detail += ": " + err.Error()
			}
			s.fail("mx-pass", fmt.Sprintf("add \"mx\" or \"ip%d:%s\" to the SPF record", map[bool]int{true: 4, false: 6}[ip.Is4()], ip),
				"%s (%s) does not pass SPF (%s)", ip, mx.Name, detail)
		}
	}
}

// dkimKey is one [[checks.dkimsign.keys]] entry.
type dkimKey struct {
	Domain   string `toml:"domain"`
	Selector string `toml:"selector"`
	KeyFile  string `toml:"key_file"`
}

// checkDKIM checks that every signing key of [checks.dkimsign] is published and matches.
func (a *auditor) checkDKIM(ctx context.Context) {
	s := a.section("dkim")
	var keys struct {
		Keys []dkimKey `toml:"keys"`
	}
	if a.opts.Config == nil {
		s.warn("keys", "give -c moat.toml", "DKIM keys not checked: no moat configuration given")
		return
	}
	{
		if err := a.opts.Config.Section("checks.dkimsign").Pick("keys").Decode(&keys); err != nil {
			s.fail("config", "correct [checks.dkimsign]", "%v", err)
			return
		}
	}
	if len(keys.Keys) == 0 {
		s.warn("keys", "sign outgoing mail: moat dkim keygen DOMAIN SELECTOR, then a [[checks.dkimsign.keys]] entry",
			"no DKIM signing keys in [checks.dkimsign]")
		return
	}
	for _, k := range keys.Keys {
		name := k.Selector + "._domainkey." + strings.TrimSuffix(strings.ToLower(k.Domain), ".")
		signer, err := dkim.LoadKey(a.opts.Config.Abs(k.KeyFile))
		if err != nil {
			s.fail("key", "make the key file readable, or make a new key with moat dkim keygen", "%s: %v", name, err)
			continue
		}
		want, _ := dkim.TXTRecord(signer.Public())
		fix := fmt.Sprintf("publish %s. IN TXT \"%s\"", name, want)
		txts, err := a.txt(ctx, name)
		if err != nil {
			s.fail("key", "make the domain's name servers answer", "%s: lookup failed: %v", name, err)
			continue
		}
		var recs []string
		for _, t := range txts {
			if strings.Contains(t, "p=") {
				recs = append(recs, t)
			}
		}
		if len(recs) != 1 {
			s.fail("key", fix, "%s: %d key records, want one", name, len(recs))
			continue
		}
		pub, err := dkim.ParseKeyRecord(recs[0])
		if err != nil {
			s.fail("key", fix, "%s: %v", name, err)
			continue
		}
		if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); ok && eq.Equal(signer.Public()) {
			s.pass("key", "%s: published and matches %s", name, k.KeyFile)
		} else {
			s.fail("key", fix, "%s: the published key does not match the private key in %s", name, k.KeyFile)
		}
	}
}

// checkDMARC checks the domain's DMARC record, its policy and its report destinations.
func (a *auditor) checkDMARC(ctx context.Context) {
	s := a.section("dmarc")
	name := "_dmarc." + a.domain
	txts, err := a.txt(ctx, name)
	if err != nil {
		s.fail("record", "make the domain's name servers answer", "DMARC lookup failed: %v", err)
		return
	}
	fix := fmt.Sprintf("publish %s. IN TXT \"v=DMARC1; p=reject; rua=mailto:dmarc-reports@%s\"", name, a.domain)
	var recs []string
	for _, t := range txts {
		if _, err := dmarc.ParseRecord(t); err != dmarc.ErrNotDMARC {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		s.fail("record", fix, "no DMARC record at %s", name)
		return
	case 1:
	default:
		s.fail("record", "keep one DMARC record (RFC 7489 section 6.6.3: several mean none)", "%d DMARC records at %s", len(recs), name)
		return
	}
	rec, err := dmarc.ParseRecord(recs[0])
	if err != nil {
		s.fail("record", fix, "%s: %v", recs[0], err)
		return
	}
	s.pass("record", "%s", recs[0])
	if rec.Policy == dmarc.PolicyNone {
		s.warn("policy", "move to p=quarantine, then p=reject, once the reports show your own mail passing",
			"p=none: receivers are asked to do nothing with mail that fails")
	} else {
		s.pass("policy", "p=%s", rec.Policy)
	}
	if len(rec.RUA) == 0 {
		s.warn("rua", fmt.Sprintf("add rua=mailto:dmarc-reports@%s to receive aggregate reports", a.domain), "no rua: no reports")
		return
	}
	s.pass("rua", "reports to %s", strings.Join(rec.RUA, ", "))
	org := dmarc.OrgDomain(a.domain)
	for _, u := range rec.RUA {
		addr, ok := strings.CutPrefix(strings.ToLower(u), "mailto:")
		if !ok {
			continue
		}
		if i := strings.IndexByte(addr, '!'); i >= 0 { // a size limit (RFC 7489 section 6.2)
			addr = addr[:i]
		}
		at := strings.LastIndexByte(addr, '@')
		if at < 0 {
			s.warn("rua-external", "write rua as mailto:user@domain", "%s: not an address", u)
			continue
		}
		dest := addr[at+1:]
		if dmarc.OrgDomain(dest) == org {
			continue
		}
		// RFC 7489 section 7.1: the destination domain must publish DOMAIN._report._dmarc.DEST.
		auth := a.domain + "._report._dmarc." + dest
		txts, err := a.txt(ctx, auth)
		ok = false
		for _, t := range txts {
			ok = ok || strings.HasPrefix(strings.ToLower(strings.TrimSpace(t)), "v=dmarc1")
		}
		switch {
		case ok:
			s.pass("rua-external", "%s is authorised by %s", dest, auth)
		case err != nil:
			s.warn("rua-external", "make the destination's name servers answer", "%s: lookup failed: %v", auth, err)
		default:
			s.fail("rua-external", fmt.Sprintf("ask %s to publish %s. IN TXT \"v=DMARC1\", or send reports to your own domain", dest, auth),
				"reports to %s are not authorised: no record at %s, so receivers will not send them", dest, auth)
		}
	}
}
