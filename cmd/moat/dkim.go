package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/moatmail/moat/auth/dkim"
)

func init() {
	commands["dkim"] = command{summary: "make a DKIM signing key in a new file (mode 0600) and print the DNS record to publish",
		run: runDKIM, usage: "keygen [--type rsa|ed25519] [--out FILE] DOMAIN SELECTOR"}
	addConfigWarnings(dkim.KeyFileWarnings)
}

func runDKIM(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dkim", flag.ContinueOnError)
	keyType := fs.String("type", "rsa", "key type: rsa (2048 bits) or ed25519")
	out := fs.String("out", "", "write the private key to this new `file` (default DOMAIN.SELECTOR.pem in the current directory); an existing file is never overwritten")
	if len(args) > 0 && args[0] == "--help" {
		commandHelp(stdout, "dkim", fs)
		return 0
	}
	if len(args) == 0 || args[0] != "keygen" {
		return usageError(stderr, "dkim", "the only subcommand is keygen")
	}
	// Accept the flags before or after the operands.
	var operands []string
	rest := args[1:]
	for len(rest) > 0 {
		if code, ok := parseFlags("dkim", fs, rest, stdout, stderr); !ok {
			return code
		}
		if fs.NArg() == 0 {
			break
		}
		operands = append(operands, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(operands) != 2 {
		return usageError(stderr, "dkim", "keygen takes DOMAIN and SELECTOR")
	}
	if strings.ContainsAny(operands[0]+operands[1], "/\\") {
		return usageError(stderr, "dkim", "DOMAIN and SELECTOR must not contain a path separator")
	}
	keyPath := *out
	if keyPath == "" {
		keyPath = operands[0] + "." + operands[1] + ".pem"
	}
	if err := dkim.KeygenFile(keyPath, stdout, operands[0], operands[1], *keyType); err != nil {
		fmt.Fprintln(stderr, "moat dkim keygen: "+err.Error())
		return 1
	}
	fmt.Fprintf(stderr, "moat dkim keygen: private key written to %s (mode 0600); give it as key_file in [[checks.dkimsign.keys]]\n", keyPath)
	return 0
}
