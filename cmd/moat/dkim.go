package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/moatmail/moat/auth/dkim"
)

func init() {
	commands["dkim"] = command{"dkim keygen DOMAIN SELECTOR [--type rsa|ed25519]: make a signing key and its DNS record", runDKIM}
}

func runDKIM(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "keygen" {
		fmt.Fprintln(stderr, "usage: moat dkim keygen [--type rsa|ed25519] DOMAIN SELECTOR")
		return 2
	}
	fs := flag.NewFlagSet("dkim keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyType := fs.String("type", "rsa", "key type: rsa (2048 bits) or ed25519")
	// Accept the flag before or after the operands.
	var operands []string
	rest := args[1:]
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		operands = append(operands, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(operands) != 2 {
		fmt.Fprintln(stderr, "usage: moat dkim keygen [--type rsa|ed25519] DOMAIN SELECTOR")
		return 2
	}
	if err := dkim.Keygen(stdout, operands[0], operands[1], *keyType); err != nil {
		fmt.Fprintln(stderr, "moat dkim keygen: "+err.Error())
		return 1
	}
	return 0
}
