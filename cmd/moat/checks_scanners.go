package main

// Content scanners: clamd (virus) and spamd (SpamAssassin score) at end of message, and `moat learn`.
import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	_ "github.com/moatmail/moat/scanners/clamd"
	"github.com/moatmail/moat/scanners/spamc"
	"github.com/moatmail/moat/scanners/spamd"
)

func init() {
	commands["learn"] = command{summary: "teach spamd's Bayes database (spamd TELL)", run: runLearn,
		usage: "[-c FILE] [-timeout 30s] [-user NAME | -rcpt-domain DOMAIN] spam|ham|forget MESSAGE.eml..."}
}

// runLearn sends each message to spamd with TELL (spamd must run with --allow-tell). It exits 1 when any
// message failed, 0 otherwise (also when spamd already knew a message: that is reported, not an error).
func runLearn(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("learn", flag.ContinueOnError)
	path := configFlag(fs)
	timeout := fs.Duration("timeout", 30*time.Second, "deadline for each message")
	user := fs.String("user", "", "spamd User whose Bayes database learns (default: [checks.spamd] user; \"\" for none)")
	rcptDomain := fs.String("rcpt-domain", "", "learn for mail to this domain: the User that user_per_domain sends for it")
	if code, ok := parseFlags("learn", fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() < 2 {
		return usageError(stderr, "learn", "give the class and at least one message")
	}
	class := fs.Arg(0)
	if _, err := spamc.ParseClass(class); err != nil {
		fmt.Fprintln(stderr, "moat: "+err.Error())
		return 2
	}
	f, err := loadConfig(*path)
	if err != nil {
		return fail(stderr, err)
	}
	cfg, err := spamd.ConfigFrom(f)
	if err != nil {
		return fail(stderr, err)
	}
	userSet := false
	fs.Visit(func(fl *flag.Flag) { userSet = userSet || fl.Name == "user" })
	if cfg.User, err = spamd.LearnUser(cfg, *user, userSet, *rcptDomain); err != nil {
		fmt.Fprintln(stderr, "moat: "+err.Error())
		return 2
	}
	status := 0
	for _, file := range fs.Args()[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		res, err := spamd.Learn(ctx, cfg, class, []string{file})
		cancel()
		if err != nil {
			return fail(stderr, err)
		}
		for _, r := range res {
			switch {
			case r.Err != nil:
				fmt.Fprintf(stderr, "%s: error: %v\n", r.Path, r.Err)
				status = 1
			case r.Changed:
				fmt.Fprintf(stdout, "%s: learned as %s\n", r.Path, class)
			default:
				fmt.Fprintf(stdout, "%s: unchanged (already learned, or Bayes is off)\n", r.Path)
			}
		}
	}
	return status
}
