package spamd

import (
	"context"
	"fmt"
	"os"

	"github.com/moatmail/moat/config"
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
	return cfg, nil
}

// Learn sends TELL for each message file (`moat learn spam|ham|forget MESSAGE.eml...`): class is "spam",
// "ham" or "forget". Each file is streamed, whatever its size, with the User header of cfg.User. It returns
// one result per file; the error is for a bad class or configuration. ctx bounds the whole run; callers
// usually give each file a deadline of its own by calling Learn once per file.
func Learn(ctx context.Context, cfg Config, class string, paths []string) ([]LearnResult, error) {
	cl, err := ParseClass(class)
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

func learnOne(ctx context.Context, client *Client, class Class, user, path string) LearnResult {
	f, err := os.Open(path)
	if err != nil {
		return LearnResult{Path: path, Err: fmt.Errorf("spamd: learn: %w", err)}
	}
	defer f.Close()
	body, err := FileBody(f)
	if err != nil {
		return LearnResult{Path: path, Err: fmt.Errorf("spamd: learn: %w", err)}
	}
	changed, err := client.Tell(ctx, class, user, body)
	return LearnResult{Path: path, Changed: changed, Err: err}
}
