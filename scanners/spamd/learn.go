package spamd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/scanners/servers"
	"github.com/moatmail/moat/scanners/spamc"
)

// LearnResult is the outcome of teaching spamd one message.
type LearnResult struct {
	Path    string
	Changed bool  // spamd's Bayes database changed (DidSet/DidRemove: local)
	Err     error // nil when spamd answered
}

// ConfigFrom reads [checks.spamd] from a configuration file with the check's defaults, for `moat learn`.
func ConfigFrom(f *config.File) (Config, error) {
	sec := f.Section("checks." + Name)
	if !sec.Present() {
		return Config{}, &config.Error{File: f.Path, Key: "checks." + Name, Msg: "no [checks.spamd] table: nothing to learn with"}
	}
	cfg := DefaultConfig()
	if err := sec.Without("enabled", "dry_run", "timeout").Decode(&cfg); err != nil {
		return Config{}, err
	}
	if _, err := newClient(sec, cfg); err != nil {
		return Config{}, err
	}
	// Socket paths are relative to the configuration file, not to where `moat learn` runs.
	for i, s := range cfg.Servers {
		if srv, err := servers.Parse(s); err == nil && srv.Network == "unix" {
			cfg.Servers[i] = "unix:" + f.Abs(srv.Addr)
		}
	}
	return cfg, nil
}

// LearnUser picks the User header for `moat learn`, so that learning reaches the Bayes database that
// scanning uses: user when userSet (-user; "" sends no User header), else the recipient domain rcptDomain
// (-rcpt-domain: what user_per_domain sends for mail to that domain, lowercased), else cfg.User. With
// user_per_domain on, the database depends on the recipients, so one of the two must be given: LearnUser
// refuses rather than teach the wrong database. Giving both is an error too.
func LearnUser(cfg Config, user string, userSet bool, rcptDomain string) (string, error) {
	switch {
	case userSet && rcptDomain != "":
		return "", errors.New("spamd: learn: give -user or -rcpt-domain, not both")
	case userSet:
		if !validUser(user) {
			return "", fmt.Errorf("spamd: learn: user %q: must be printable ASCII without spaces", user)
		}
		return user, nil
	case rcptDomain != "":
		d := strings.ToLower(strings.TrimSuffix(rcptDomain, "."))
		if d == "" || strings.Contains(d, "@") || !validUser(d) {
			return "", fmt.Errorf("spamd: learn: recipient domain %q: want a domain name such as example.org", rcptDomain)
		}
		return d, nil
	case cfg.UserPerDomain:
		return "", errors.New("spamd: learn: user_per_domain is set, so each recipient domain has its own Bayes " +
			"database: say which with -rcpt-domain DOMAIN (or -user NAME)")
	}
	return cfg.User, nil
}

func validUser(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// Learn sends TELL for each message file (`moat learn spam|ham|forget MESSAGE.eml...`): class is "spam",
// "ham" or "forget". Each file is streamed, whatever its size (compressed too), with the User header of
// cfg.User (see LearnUser for `moat learn -user/-rcpt-domain`). It returns
// one result per file; the error is for a bad class or configuration. ctx bounds the whole run; callers
// usually give each file a deadline of its own by calling Learn once per file.
func Learn(ctx context.Context, cfg Config, class string, paths []string) ([]LearnResult, error) {
	cl, err := spamc.ParseClass(class)
	if err != nil {
		return nil, err
	}
	client, err := newClient(nil, cfg)
	if err != nil {
		return nil, err
	}
	out := make([]LearnResult, 0, len(paths))
	for _, p := range paths {
		out = append(out, learnOne(ctx, client, cl, cfg.User, p))
	}
	return out, nil
}

func learnOne(ctx context.Context, client *spamc.Client, class spamc.Class, user, path string) LearnResult {
	f, err := os.Open(path)
	if err != nil {
		return LearnResult{Path: path, Err: fmt.Errorf("spamd: learn: %w", err)}
	}
	defer f.Close()
	body, err := spamc.FileBody(f)
	if err != nil {
		return LearnResult{Path: path, Err: fmt.Errorf("spamd: learn: %w", err)}
	}
	changed, err := client.Tell(ctx, class, user, body)
	return LearnResult{Path: path, Changed: changed, Err: err}
}
