package main

// Greylisting and `moat greylist list|show|release|purge`.
import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/rules/greylist"
	"github.com/moatmail/moat/store"
)

func init() {
	commands["greylist"] = command{summary: "list, show, release or purge greylisting entries", run: runGreylist,
		usage: "[-c FILE] list [-state pending|passed] [-client S] [-from S] [-to S] [-limit N] [-json]\n" +
			"[-c FILE] show ID\n[-c FILE] release ID\n[-c FILE] purge"}
}

// runGreylist opens the configured store (SQLite may be in use by `moat serve` at the same time) and runs one
// greylist subcommand. Exit status: 0 done, 1 failed, 2 bad usage.
func runGreylist(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("greylist", flag.ContinueOnError)
	path := configFlag(fs)
	if code, ok := parseFlags("greylist", fs, args, stdout, stderr); !ok {
		if code == 0 {
			// The subcommands' descriptions; their synopses are the command's usage already.
			if _, desc, ok := strings.Cut(greylist.Usage, "\n\n"); ok {
				fmt.Fprintln(stdout, "\n"+desc)
			}
		}
		return code
	}
	return runStateCommand(*path, fs.Args(), greylist.Command, greylist.ErrUsage, stdout, stderr)
}

// runStateCommand loads the configuration and runs a subcommand that reads or changes a check's state in the
// store, bounded in time. The store is opened here, in the composition root, with store.Load (which never
// creates an SQLite database), when the subcommand asks for it. Exit status: 0 done, 1 failed, 2 bad usage (errUsage).
func runStateCommand(path string, args []string, run func(context.Context, *config.File, store.Opener, []string, io.Writer) error,
	errUsage error, stdout, stderr io.Writer) int {
	f, err := loadConfig(path)
	if err != nil {
		return fail(stderr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	open := func(ctx context.Context) (store.Store, error) { return store.Load(ctx, f) }
	if err := run(ctx, f, open, args, stdout); err != nil {
		fmt.Fprintln(stderr, "moat: "+err.Error())
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}
