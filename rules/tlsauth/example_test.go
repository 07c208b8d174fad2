package tlsauth_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
)

// TestExampleConfig builds an engine from example.toml (the snippet for moat.example.toml), with the list
// files it names replaced by small temporary ones, so that the example cannot rot.
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	lists := map[string]string{
		"tls-networks": "192.0.2.0/24\n",
		"tls-senders":  "bank.example\n",
	}
	dir := t.TempDir()
	text := regexp.MustCompile(`/etc/moat/[a-z-]+`).ReplaceAllStringFunc(string(data), func(p string) string {
		name := filepath.Base(p)
		content, ok := lists[name]
		if !ok {
			t.Fatalf("example.toml names %s, which the test does not know", p)
		}
		out := filepath.Join(dir, name)
		if err := os.WriteFile(out, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return out
	})
	f, err := config.Parse("example.toml", []byte("[policy]\nauthserv_id = \"mx.test\"\n"+text))
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.Build(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Checks(); len(got) != 1 || got[0] != "tlsauth" {
		t.Errorf("checks %v, want [tlsauth]", got)
	}
}
