package main

// Envelope policy checks: relay control, recipient validation, barring, sender lists, TLS/AUTH policy.
import (
	_ "github.com/moatmail/moat/rules/barring"
	_ "github.com/moatmail/moat/rules/recipients"
	_ "github.com/moatmail/moat/rules/relay"
	_ "github.com/moatmail/moat/rules/senderlists"
	_ "github.com/moatmail/moat/rules/tlsauth"
)
