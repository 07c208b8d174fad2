package main

// Trusted correspondents learned from outbound mail, and `moat correspondents list|forget|import`.
import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/rules/correspondents"
)

func init() {
	commands["correspondents"] = command{"list, forget or import a user's correspondents: correspondents [-c FILE] list|forget|import USER ...", runCorrespondents}
}

// runCorrespondents opens the configured store and runs one correspondents subcommand. Exit status: 0 done,
// 1 failed, 2 bad usage.
func runCorrespondents(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("correspondents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	f, err := config.Load(*path)
	if err != nil {
		return fail(stderr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := correspondents.Command(ctx, f, fs.Args(), stdout); err != nil {
		fmt.Fprintln(stderr, "moat: "+err.Error())
		if errors.Is(err, correspondents.ErrUsage) {
			return 2
		}
		return 1
	}
	return 0
}
