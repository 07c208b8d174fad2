package dnsauth

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/dkim"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/test/stack"
)

// TestExampleConfigs builds an engine from the example.toml of every DNS and sender authentication check together, so that
// the documented examples stay valid (unknown keys, bad values and missing tables all fail Build).
func TestExampleConfigs(t *testing.T) {
	root := stack.RepoRoot(t)
	var all bytes.Buffer
	for _, dir := range []string{"auth/resolver", "rules/dnsbl", "auth/rdns", "auth/spf", "auth/dkim", "auth/dmarc"} {
		data, err := os.ReadFile(filepath.Join(root, dir, "example.toml"))
		if err != nil {
			t.Fatal(err)
		}
		all.Write(data)
		all.WriteString("\n")
	}
	var key bytes.Buffer
	if err := dkim.Keygen(&key, "example.org", "s2026", "ed25519"); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyPath, key.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(all.String(), "/etc/moat/dkim/example.org.s2026.pem", keyPath)
	f, err := config.Parse("examples.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.Build(f, nil, policytest.Services())
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(e.Checks(), ",")
	if want := "dnsbl,rdns,spf,dkim,dmarc,dkimsign"; got != want {
		t.Errorf("checks %s, want %s", got, want)
	}
}
