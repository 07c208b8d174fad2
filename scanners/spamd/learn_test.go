package spamd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
)

func TestLearnUser(t *testing.T) {
	perDomain := Config{User: "filter", UserPerDomain: true}
	fixed := Config{User: "filter"}
	tests := []struct {
		name       string
		cfg        Config
		user       string
		userSet    bool
		rcptDomain string
		want       string
		err        string
	}{
		{name: "fixed user from the configuration", cfg: fixed, want: "filter"},
		{name: "no user configured", cfg: Config{}, want: ""},
		{name: "per domain without a flag refused", cfg: perDomain, err: "user_per_domain is set"},
		{name: "per domain with -rcpt-domain", cfg: perDomain, rcptDomain: "Example.NET.", want: "example.net"},
		{name: "per domain with -user", cfg: perDomain, user: "filter", userSet: true, want: "filter"},
		{name: "explicit empty -user sends none", cfg: perDomain, user: "", userSet: true, want: ""},
		{name: "-user overrides the fixed user", cfg: fixed, user: "bob", userSet: true, want: "bob"},
		{name: "both flags refused", cfg: perDomain, user: "x", userSet: true, rcptDomain: "example.net", err: "not both"},
		{name: "address instead of a domain", cfg: perDomain, rcptDomain: "a@example.net", err: "want a domain name"},
		{name: "user with a space", cfg: fixed, user: "a b", userSet: true, err: "printable ASCII"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LearnUser(tc.cfg, tc.user, tc.userSet, tc.rcptDomain)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("LearnUser = %q, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("LearnUser = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// Learning for a recipient domain sends the same User as scanning mail to that domain (TestUserHeader).
func TestLearnSendsDomainUser(t *testing.T) {
	f := startFakeSpamd(t, func(fakeRequest) string { return "SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n" })
	cfg := DefaultConfig()
	cfg.Servers, cfg.UserPerDomain, cfg.User = []string{"tcp:" + f.Srv.Addr}, true, "filter"
	user, err := LearnUser(cfg, "", false, "example.net")
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = user
	path := filepath.Join(t.TempDir(), "m.eml")
	if err := os.WriteFile(path, []byte("Subject: x\r\n\r\nspam\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Learn(context.Background(), cfg, "spam", []string{path})
	if err != nil || len(res) != 1 || res[0].Err != nil || !res[0].Changed {
		t.Fatalf("Learn = %+v, %v", res, err)
	}
	reqs := f.Requests()
	if len(reqs) != 1 || reqs[0].Headers["User"] != "example.net" || reqs[0].Headers["Message-class"] != "spam" {
		t.Fatalf("spamd received %+v", reqs)
	}
}

// A relative socket path is relative to the configuration file, for scanning and for `moat learn`.
func TestRelativeSocketPath(t *testing.T) {
	f, err := config.Parse("/etc/moat/moat.toml", []byte("[checks.spamd]\nservers = [\"unix:run/spamd.sock\", \"tcp:127.0.0.1:783\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFrom(f)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Servers[0] != "unix:/etc/moat/run/spamd.sock" || cfg.Servers[1] != "tcp:127.0.0.1:783" {
		t.Fatalf("servers = %q", cfg.Servers)
	}
	c, err := New(f.Section("checks."+Name), DefaultConfig().withServers("unix:run/spamd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.client.Servers()[0].Addr; got != "/etc/moat/run/spamd.sock" {
		t.Fatalf("check's socket = %q", got)
	}
}

func (c Config) withServers(s ...string) Config { c.Servers = s; return c }
