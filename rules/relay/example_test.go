package relay_test

import (
	"testing"

	"github.com/moatmail/moat/policy/policytest"
)

// TestExampleConfig builds an engine from example.toml (the snippet for moat.example.toml), with the list
// files it names replaced by small temporary ones, so that the example cannot rot.
func TestExampleConfig(t *testing.T) {
	policytest.ExampleEngine(t, "example.toml", map[string]string{
		"local-domains":    "example.net\n",
		"relay-domains":    "partner.example\n",
		"trusted-networks": "192.0.2.0/24\n",
	}, "relay")
}
