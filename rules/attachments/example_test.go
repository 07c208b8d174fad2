package attachments_test

import (
	"testing"

	"github.com/moatmail/moat/policy/policytest"
)

// TestExampleConfig builds an engine from example.toml (the snippet for moat.example.toml), so that the
// example cannot rot.
func TestExampleConfig(t *testing.T) {
	policytest.ExampleEngine(t, "example.toml", map[string]string{
		"attachment-names": "~*.iso\n*.zip\n",
		"attachment-types": "application/x-*\n",
		"lab-domains":      "lab.example.com\n",
	}, "attachments")
}
