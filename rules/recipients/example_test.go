package recipients_test

import (
	"testing"

	"github.com/moatmail/moat/policy/policytest"
)

// TestExampleConfig builds an engine from example.toml (the snippet for moat.example.toml), with the list
// files it names replaced by small temporary ones, so that the example cannot rot.
func TestExampleConfig(t *testing.T) {
	policytest.ExampleEngine(t, "example.toml", map[string]string{
		"recipients":    "alice@example.com\n",
		"local-domains": "example.com\n",
	}, "recipients")
}
