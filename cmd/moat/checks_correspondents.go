package main

// Trusted correspondents learned from outbound mail, and `moat correspondents list|forget|import`.
import (
	"flag"
	"io"

	"github.com/moatmail/moat/rules/correspondents"
)

func init() {
	commands["correspondents"] = command{summary: "list, forget or import a user's learned correspondents", run: runCorrespondents,
		usage: "[-c FILE] list USER\n[-c FILE] forget USER [ADDR|DOMAIN]\n[-c FILE] import USER FILE"}
}

// runCorrespondents opens the configured store and runs one correspondents subcommand. Exit status: 0 done,
// 1 failed, 2 bad usage.
func runCorrespondents(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("correspondents", flag.ContinueOnError)
	path := configFlag(fs)
	if code, ok := parseFlags("correspondents", fs, args, stdout, stderr); !ok {
		return code
	}
	return runStateCommand(*path, fs.Args(), correspondents.Command, correspondents.ErrUsage, stdout, stderr)
}
