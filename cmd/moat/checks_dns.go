package main

// The DNS checks and sender authentication, and the shared resolver they use.
import (
	_ "github.com/moatmail/moat/auth/dkim"
	_ "github.com/moatmail/moat/auth/dmarc"
	_ "github.com/moatmail/moat/auth/rdns"
	_ "github.com/moatmail/moat/auth/spf"
	_ "github.com/moatmail/moat/rules/dnsbl"
)
