package main

// Greylisting and `moat greylist list|show|release|purge`.
import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/rules/greylist"
)

func init() {
	commands["greylist"] = command{"list, show, release or purge greylisting entries: greylist [-c FILE] list|show|release|purge", runGreylist}
}

// runGreylist opens the configured store (SQLite may be in use by `moat serve` at the same time) and runs one
// greylist subcommand. Exit status: 0 done, 1 failed, 2 bad usage.
func runGreylist(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("greylist", flag.ContinueOnError)
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
	if err := greylist.Command(ctx, f, fs.Args(), stdout); err != nil {
		fmt.Fprintln(stderr, "moat: "+err.Error())
		if errors.Is(err, greylist.ErrUsage) {
			return 2
		}
		return 1
	}
	return 0
}
