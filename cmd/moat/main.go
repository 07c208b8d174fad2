// Command moat is a mail filter (milter) for Postfix and Sendmail.
//
//	moat serve -c moat.toml           run the milter
//	moat check-config -c moat.toml    validate the configuration
//	moat scan -c moat.toml [flags] [MESSAGE.eml|-]
//	                                  run the checks offline and print the verdict as JSON
//	moat version
//
// Subcommands of the checks (dkim keygen, greylist, learn) are listed by `moat help`.
//
// This package is the composition root: it links the checks in (blank imports in checks_*.go), builds the
// services they share from their tables (services.go: the resolver from [dns], the store from [store]) and
// hands both to policy.Build, and the engine to the milter.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
)

// command is one subcommand. Packages of checks add theirs to commands from init() in cmd/moat/checks_*.go.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{
	"serve":        {"run the milter", runServe},
	"check-config": {"validate the configuration file and print the checks it enables", runCheckConfig},
	"scan":         {"run the checks on a message offline and print the verdict as JSON", runScan},
	"version":      {"print moat's version", runVersion},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "moat: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return cmd.run(args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: moat COMMAND [flags]")
	fmt.Fprintln(w)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
}

func runVersion(_ []string, stdout, _ io.Writer) int {
	fmt.Fprintf(stdout, "moat %s\n", policy.Version)
	return 0
}

// configFlag adds the -c flag every command that reads the configuration has.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("c", "moat.toml", "configuration `file`")
}

// loadAll loads the configuration and builds the engine, the way serve does.
func loadAll(path string, log *slog.Logger) (*config.File, *policy.Engine, error) {
	f, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	eng, err := policy.Build(f, log, services())
	if err != nil {
		return nil, nil, err
	}
	return f, eng, nil
}

func runCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f, eng, err := loadAll(*path, log)
	if err != nil {
		return fail(stderr, err)
	}
	defer eng.Retire()
	mc, err := loadMilterConfig(f)
	if err != nil {
		return fail(stderr, err)
	}
	if _, err := loadLogConfig(f); err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "%s: ok\nlisten: %s\nchecks: %s\n", *path, strings.Join(mc.Listen, " "), orNone(eng.Checks()))
	return 0
}

// fail prints err as moat's error line and returns the exit status of a failed command.
func fail(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "moat: "+err.Error())
	return 1
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "(none)"
	}
	return strings.Join(list, " ")
}
