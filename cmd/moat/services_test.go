package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/resolver"
)

// TestServicesOnlyWhenUsed: the composition root builds a service only for a configuration whose checks use
// it: no moat.db without greylisting, no resolver (here: one that cannot be built, as no resolv.conf exists)
// without a DNS check.
func TestServicesOnlyWhenUsed(t *testing.T) {
	old := resolver.ResolvConf
	resolver.ResolvConf = filepath.Join(t.TempDir(), "no-resolv.conf")
	t.Cleanup(func() { resolver.ResolvConf = old })
	checkConfig := func(body string) (int, string) {
		var out, errb bytes.Buffer
		code := run([]string{"check-config", "-c", writeConfig(t, body)}, &out, &errb)
		return code, errb.String()
	}
	const tables = "[dns]\ntimeout = \"1s\"\n[store]\npath = \"moat.db\"\n"

	cfg := writeConfig(t, tables+"[checks.relay]\nlocal_domains = [\"example.test\"]\n")
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-c", cfg}, &out, &errb); code != 0 {
		t.Fatalf("check-config without DNS checks or greylisting: exit %d: %s", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfg), "moat.db")); err == nil {
		t.Error("moat.db was created for a configuration without greylisting")
	}

	if code, msg := checkConfig(tables + "[checks.spf]\n"); code != 1 || !strings.Contains(msg, "moat.toml:1: dns.servers: ") {
		t.Errorf("spf without a usable resolver: exit %d, %q; want the error at dns.servers", code, msg)
	}

	cfg = writeConfig(t, tables+"[checks.greylist]\n")
	if code := run([]string{"check-config", "-c", cfg}, &out, &errb); code != 0 {
		t.Fatalf("check-config with greylisting: exit %d: %s", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfg), "moat.db")); err != nil {
		t.Errorf("greylisting's store was not opened: %v", err)
	}
}
