// Command moat is a mail filter (milter) for Postfix and Sendmail.
//
//	moat serve [-c moat.toml]           run the milter
//	moat check-config [-c moat.toml]    validate the configuration
//	moat scan [-c moat.toml] [flags] [MESSAGE.eml|-]
//	                                    run the checks offline and print the verdict as JSON
//	moat version
//
// Every command, with the subcommands of the checks (dkim keygen, greylist, learn), is listed by `moat help`;
// `moat COMMAND --help` describes one.
//
// This package is the composition root: it links the checks in (blank imports in checks_*.go), builds the
// services they share from their tables (services.go: the resolver from [dns], the store from [store]) and
// hands both to policy.Build, and the engine to the milter.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/metrics"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/web"
)

// command is one subcommand. Packages of checks add theirs to commands from init() in cmd/moat/checks_*.go.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
	// usage is the synopsis after "moat NAME": flags and operands, one line per form.
	usage string
}

// commands holds every subcommand; the entries are added from init() (the table refers to functions that
// print it).
var commands = map[string]command{}

func init() {
	for name, c := range baseCommands() {
		commands[name] = c
	}
}

func baseCommands() map[string]command {
	return map[string]command{
		"serve":        {summary: "run the milter", run: runServe, usage: "[-c FILE]"},
		"check-config": {summary: "validate the configuration file and print the checks it enables", run: runCheckConfig, usage: "[-c FILE]"},
		"scan": {summary: "run the checks on a message offline and print the verdict as JSON", run: runScan,
			usage: "[-c FILE] [--ip IP] [--helo NAME] [--from ADDR] [--rcpt ADDR]... [--auth USER] [--tls] [--local] [--update-state] [--exit-code] [MESSAGE.eml|-]"},
		"version": {summary: "print moat's version", run: runVersion, usage: ""},
		"help":    {summary: "print this list, or the usage of one command", run: nil, usage: "[COMMAND]"},
	}
}

// defaultConfigPaths are where the commands look for the configuration when no -c is given, in this order.
var defaultConfigPaths = []string{"/etc/moat/moat.toml", "moat.toml"}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "-version", "--version", "-V":
		return runVersion(nil, stdout, stderr)
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		if _, ok := commands[args[1]]; !ok || len(args) > 2 {
			fmt.Fprintf(stderr, "moat help: unknown command %q\n", strings.Join(args[1:], " "))
			return 2
		}
		args = []string{args[1], "--help"}
	}
	name := args[0]
	cmd, ok := commands[name]
	if !ok || cmd.run == nil {
		fmt.Fprintf(stderr, "moat: unknown command %q\n\n", name)
		usage(stderr)
		return 2
	}
	if wantsHelp(args[1:]) {
		// Help never needs a configuration file: each command answers --help before it reads one.
		return cmd.run([]string{"--help"}, stdout, stderr)
	}
	return cmd.run(args[1:], stdout, stderr)
}

// wantsHelp reports whether a command line asks for help anywhere before "--" (also after a subcommand, as in
// `moat greylist list --help`).
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// usage prints every command with its arguments.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: moat COMMAND [flags] [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-14s %s\n", n, c.summary)
		for _, line := range strings.Split(c.usage, "\n") {
			fmt.Fprintf(w, "  %-14s   %s\n", "", strings.TrimSpace("moat "+n+" "+strings.TrimSpace(line)))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Without -c, the configuration is %s, else ./%s.\n", defaultConfigPaths[0], defaultConfigPaths[1])
	fmt.Fprintln(w, "moat --version prints the version; moat COMMAND --help describes one command.")
}

// commandHelp prints one command's usage, its summary and its flags.
func commandHelp(w io.Writer, name string, fs *flag.FlagSet) {
	c := commands[name]
	for i, line := range strings.Split(c.usage, "\n") {
		lead := "usage:"
		if i > 0 {
			lead = "      "
		}
		fmt.Fprintf(w, "%s %s\n", lead, strings.TrimSpace("moat "+name+" "+strings.TrimSpace(line)))
	}
	fmt.Fprintf(w, "\n%s\n", c.summary)
	if fs != nil {
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(w, "\nflags:")
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
}

// parseFlags parses a command's flags. --help prints the command's help on stdout (exit 0); a bad flag is
// reported on stderr with the usage (exit 2). ok is false when the command must return code at once.
func parseFlags(name string, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		commandHelp(stdout, name, fs)
		return 0, false
	default:
		return usageError(stderr, name, err.Error()), false
	}
}

// usageError reports a malformed command line and returns exit status 2.
func usageError(stderr io.Writer, name, msg string) int {
	fmt.Fprintf(stderr, "moat %s: %s\n", name, msg)
	for _, line := range strings.Split(commands[name].usage, "\n") {
		fmt.Fprintf(stderr, "usage: moat %s %s\n", name, strings.TrimSpace(line))
	}
	return 2
}

// noOperands refuses arguments left after the flags of a command that takes none.
func noOperands(name string, fs *flag.FlagSet, stderr io.Writer) (int, bool) {
	if fs.NArg() > 0 {
		return usageError(stderr, name, fmt.Sprintf("unexpected argument %q", fs.Arg(0))), false
	}
	return 0, true
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if code, ok := parseFlags("version", fs, args, stdout, stderr); !ok {
		return code
	}
	if code, ok := noOperands("version", fs, stderr); !ok {
		return code
	}
	fmt.Fprintf(stdout, "moat %s\n", policy.Version)
	return 0
}

// configFlag adds the -c flag every command that reads the configuration has; resolve the value with
// configPath.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("c", "", fmt.Sprintf("configuration `file` (default %s, else ./%s)", defaultConfigPaths[0], defaultConfigPaths[1]))
}

// configPath returns the file given with -c, or the first of defaultConfigPaths that exists.
func configPath(given string) (string, error) {
	if given != "" {
		return given, nil
	}
	for _, p := range defaultConfigPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no configuration file: neither %s nor ./%s exists (give one with -c FILE)",
		defaultConfigPaths[0], defaultConfigPaths[1])
}

// loadConfig loads the file given with -c, or the default one.
func loadConfig(given string) (*config.File, error) {
	p, err := configPath(given)
	if err != nil {
		return nil, err
	}
	return config.Load(p)
}

// loadAll loads the configuration and builds the engine, the way serve does.
func loadAll(path string, log *slog.Logger) (*config.File, *policy.Engine, error) {
	f, err := loadConfig(path)
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
	path := configFlag(fs)
	if code, ok := parseFlags("check-config", fs, args, stdout, stderr); !ok {
		return code
	}
	if code, ok := noOperands("check-config", fs, stderr); !ok {
		return code
	}
	f, err := loadConfig(*path)
	if err != nil {
		return fail(stderr, err)
	}
	// Every table is validated even after one failed, so that one run lists every error of the file.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, engErr := policy.Build(f, log, services())
	if eng != nil {
		defer eng.Retire()
	}
	mc, milterErr := loadMilterConfig(f)
	_, logErr := loadLogConfig(f)
	_, metricsErr := metrics.LoadConfig(f)
	_, webErr := web.LoadConfig(f)
	if err := errors.Join(milterErr, logErr, metricsErr, webErr, engErr); err != nil {
		return fail(stderr, err)
	}
	for _, w := range configWarnings(f) {
		fmt.Fprintln(stderr, "moat: warning: "+w)
	}
	fmt.Fprintf(stdout, "%s: ok\nlisten: %s\nchecks: %s\n", f.Path, strings.Join(mc.Listen, " "), orNone(eng.Checks()))
	return 0
}

// configWarnings are the checks' warnings about a valid configuration (a key file others can read); check
// files add theirs from init().
var configWarnings = func(*config.File) []string { return nil }

// addConfigWarnings chains fn to configWarnings.
func addConfigWarnings(fn func(*config.File) []string) {
	prev := configWarnings
	configWarnings = func(f *config.File) []string { return append(prev(f), fn(f)...) }
}

// fail prints err as moat's error lines, one per error when it joins several, and returns the exit status
// of a failed command.
func fail(stderr io.Writer, err error) int {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(stderr, "moat: "+line)
	}
	return 1
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "(none)"
	}
	return strings.Join(list, " ")
}
