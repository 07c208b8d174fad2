package audit

import (
	"fmt"

	"github.com/moatmail/moat/config"
)

// checklistPoint is one of the twelve points of moat's security checklist and the checks that carry it.
type checklistPoint struct {
	n      int
	name   string
	checks []string
}

// checklist is the twelve points in order. Point 9 (learning) has no check of its own: it is `moat learn`
// through the spamd check's servers.
var checklist = []checklistPoint{
	{1, "TLS/AUTH policy", []string{"tlsauth"}},
	{2, "valid recipients", []string{"recipients"}},
	{3, "greylisting", []string{"greylist"}},
	{4, "reverse DNS", []string{"rdns"}},
	{5, "barring", []string{"barring"}},
	{6, "sender black/white lists", []string{"senderlists"}},
	{7, "antivirus (clamd)", []string{"clamd"}},
	{8, "spam scoring (spamd)", []string{"spamd"}},
	{9, "learning", nil},
	{10, "relay control", []string{"relay"}},
	{11, "SPF, DKIM verification and signing, DMARC", []string{"spf", "dkim", "dkimsign", "dmarc"}},
	{12, "DNSBL", []string{"dnsbl"}},
}

// listKeys are the lists of a check whose emptiness the audit reports: inline key and file key.
var listKeys = map[string][][2]string{
	"recipients":  {{"addresses", "addresses_file"}},
	"barring":     {{"senders", "senders_file"}, {"recipients", "recipients_file"}},
	"senderlists": {{"whitelist", "whitelist_file"}, {"blacklist", "blacklist_file"}},
	"relay":       {{"local_domains", "local_domains_file"}, {"trusted_networks", "trusted_networks_file"}},
}

// checkState is how the configuration has one check: absent, turned off, on, or on in dry run.
type checkState int

const (
	stateAbsent checkState = iota
	stateOff
	stateOn
	stateDryRun
)

// checkMoatConfig checks moat's configuration against the twelve points: which are on, which in dry run,
// which lists are empty.
func (a *auditor) checkMoatConfig() {
	s := a.section("moat")
	f := a.opts.Config
	if a.opts.ConfigErr != nil {
		s.fail("config", "correct the file: moat check-config -c FILE names file, line and key", "%v", a.opts.ConfigErr)
	}
	if f == nil {
		if a.opts.ConfigErr == nil {
			s.warn("config", "give -c moat.toml", "moat's configuration not audited: no file given")
		}
		return
	}
	var pol struct {
		DryRun bool `toml:"dry_run"`
	}
	if err := f.Section("policy").Pick("dry_run").Decode(&pol); err != nil {
		s.fail("config", "correct [policy] dry_run", "%v", err)
		return
	}
	if pol.DryRun {
		s.warn("dry_run", "set [policy] dry_run = false once the logs show what moat would refuse",
			"[policy] dry_run = true: every check only logs, nothing is refused")
	}
	for _, p := range checklist {
		if p.n == 9 {
			a.checkLearning(s, f, pol.DryRun)
			continue
		}
		for _, name := range p.checks {
			a.checkPoint(s, f, p, name, pol.DryRun)
		}
	}
}

// stateOf reads enabled and dry_run of [checks.NAME].
func stateOf(f *config.File, name string, globalDry bool) (checkState, error) {
	sec := f.Section("checks." + name)
	if !sec.Present() {
		return stateAbsent, nil
	}
	g := struct {
		Enabled bool `toml:"enabled"`
		DryRun  bool `toml:"dry_run"`
	}{Enabled: true}
	if err := sec.Pick("enabled", "dry_run").Decode(&g); err != nil {
		return stateAbsent, err
	}
	switch {
	case !g.Enabled:
		return stateOff, nil
	case g.DryRun || globalDry:
		return stateDryRun, nil
	}
	return stateOn, nil
}

func (a *auditor) checkPoint(s section, f *config.File, p checklistPoint, name string, globalDry bool) {
	label := fmt.Sprintf("point %d (%s): [checks.%s]", p.n, p.name, name)
	st, err := stateOf(f, name, globalDry)
	if err != nil {
		s.fail(name, fmt.Sprintf("correct [checks.%s]", name), "%s: %v", label, err)
		return
	}
	switch st {
	case stateAbsent:
		s.warn(name, fmt.Sprintf("add a [checks.%s] table (see moat.example.toml)", name), "%s is not configured: the point is off", label)
		return
	case stateOff:
		s.warn(name, fmt.Sprintf("set [checks.%s] enabled = true", name), "%s has enabled = false: the point is off", label)
		return
	case stateDryRun:
		s.warn(name, fmt.Sprintf("set dry_run = false in [checks.%s] (and [policy]) once its log lines look right", name),
			"%s is on in dry run: it logs, it refuses nothing", label)
	default:
		s.pass(name, "%s is on", label)
	}
	sec := f.Section("checks." + name)
	var lc listConfig
	var keys []string
	for _, lk := range listKeys[name] {
		keys = append(keys, lk[0], lk[1])
	}
	if err := sec.Pick(keys...).Decode(&lc); err != nil {
		s.fail(name+"-lists", fmt.Sprintf("correct the lists of [checks.%s]", name), "%v", err)
		return
	}
	for _, lk := range listKeys[name] {
		lines, err := sec.List(lk[0], *lc.inline(lk[0]), lk[1], *lc.file(lk[1]))
		if err != nil {
			s.fail(name+"-lists", fmt.Sprintf("make %s readable", lk[1]), "%v", err)
			continue
		}
		if len(lines) == 0 {
			s.warn(name+"-lists", fmt.Sprintf("fill %s (or %s) in [checks.%s]", lk[0], lk[1], name),
				"[checks.%s] %s is empty", name, lk[0])
		}
	}
	if name == "dnsbl" {
		var d struct {
			Lists []map[string]any `toml:"lists"`
		}
		if err := sec.Pick("lists").Decode(&d); err == nil && len(d.Lists) == 0 {
			s.warn(name+"-lists", "add [[checks.dnsbl.lists]] entries (zone = \"…\")", "[checks.dnsbl] has no lists: nothing is looked up")
		}
	}
}

// listConfig holds the list keys of listKeys, whichever check they belong to.
type listConfig struct {
	Addresses           []string `toml:"addresses"`
	AddressesFile       string   `toml:"addresses_file"`
	Senders             []string `toml:"senders"`
	SendersFile         string   `toml:"senders_file"`
	Recipients          []string `toml:"recipients"`
	RecipientsFile      string   `toml:"recipients_file"`
	Whitelist           []string `toml:"whitelist"`
	WhitelistFile       string   `toml:"whitelist_file"`
	Blacklist           []string `toml:"blacklist"`
	BlacklistFile       string   `toml:"blacklist_file"`
	LocalDomains        []string `toml:"local_domains"`
	LocalDomainsFile    string   `toml:"local_domains_file"`
	TrustedNetworks     []string `toml:"trusted_networks"`
	TrustedNetworksFile string   `toml:"trusted_networks_file"`
}

func (c *listConfig) inline(key string) *[]string {
	return map[string]*[]string{"addresses": &c.Addresses, "senders": &c.Senders, "recipients": &c.Recipients,
		"whitelist": &c.Whitelist, "blacklist": &c.Blacklist, "local_domains": &c.LocalDomains,
		"trusted_networks": &c.TrustedNetworks}[key]
}

func (c *listConfig) file(key string) *string {
	return map[string]*string{"addresses_file": &c.AddressesFile, "senders_file": &c.SendersFile,
		"recipients_file": &c.RecipientsFile, "whitelist_file": &c.WhitelistFile, "blacklist_file": &c.BlacklistFile,
		"local_domains_file": &c.LocalDomainsFile, "trusted_networks_file": &c.TrustedNetworksFile}[key]
}

// checkLearning reports point 9: learning goes through `moat learn` to the spamd check's servers.
func (a *auditor) checkLearning(s section, f *config.File, globalDry bool) {
	label := "point 9 (learning): moat learn"
	st, err := stateOf(f, "spamd", globalDry)
	if err != nil || st == stateAbsent || st == stateOff {
		s.warn("learning", "configure [checks.spamd] and run spamd with --allow-tell, then feed it with moat learn spam|ham",
			"%s has no spamd to teach", label)
		return
	}
	var sp struct {
		UserPerDomain bool `toml:"user_per_domain"`
	}
	_ = f.Section("checks.spamd").Pick("user_per_domain").Decode(&sp)
	if sp.UserPerDomain {
		s.warn("learning", "run moat learn with -rcpt-domain DOMAIN for each domain",
			"%s needs -rcpt-domain: user_per_domain = true keeps one Bayes database per domain", label)
		return
	}
	s.pass("learning", "%s teaches the spamd servers of [checks.spamd] (spamd must run with --allow-tell; the audit does not send TELL, which would change its database)", label)
}
