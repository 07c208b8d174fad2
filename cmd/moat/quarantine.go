package main

// `moat quarantine`: review the quarantine from the shell.
import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/moatmail/moat/quarantine"
)

func init() {
	commands["quarantine"] = command{summary: "review moat's quarantine: list, show, release, delete, learn from, purge",
		run: runQuarantine,
		usage: "[-c FILE] list [--json] [--sender S] [--rcpt R] [--kind spam|virus|policy] [--since 24h|2026-12-01]\n" +
			"[-c FILE] show ID\n[-c FILE] release ID [--rcpt ADDR]...\n[-c FILE] delete ID\n" +
			"[-c FILE] learn spam|ham ID\n[-c FILE] purge\n[-c FILE] digest [--since 24h]"}
}

func runQuarantine(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("quarantine", flag.ContinueOnError)
	path := configFlag(fs)
	if code, ok := parseFlags("quarantine", fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() == 0 {
		return usageError(stderr, "quarantine", "give a subcommand")
	}
	sub, rest := fs.Arg(0), fs.Args()[1:]
	sfs := flag.NewFlagSet("quarantine "+sub, flag.ContinueOnError)
	var rcpts listFlag
	jsonOut := false
	var sender, rcptSub, kind, since string
	operands := 1
	switch sub {
	case "list":
		sfs.BoolVar(&jsonOut, "json", false, "print JSON")
		sfs.StringVar(&sender, "sender", "", "envelope sender contains")
		sfs.StringVar(&rcptSub, "rcpt", "", "a recipient contains")
		sfs.StringVar(&kind, "kind", "", "spam, virus or policy")
		sfs.StringVar(&since, "since", "", "held since a duration ago (24h, 7d) or a date (2026-12-01)")
		operands = 0
	case "release":
		sfs.Var(&rcpts, "rcpt", "release for this recipient only (repeat; default every held one)")
	case "learn":
		operands = 2
	case "purge":
		operands = 0
	case "show", "delete":
	case "digest":
		// The recipients' digests belong to the review page (package web): cmd/moat/web.go.
		if *path != "" {
			rest = append([]string{"-c", *path}, rest...)
		}
		return runDigest(rest, stdout, stderr)
	default:
		return usageError(stderr, "quarantine", "unknown subcommand "+sub)
	}
	if code, ok := parseFlags("quarantine", sfs, rest, stdout, stderr); !ok {
		return code
	}
	if sfs.NArg() != operands {
		return usageError(stderr, "quarantine", fmt.Sprintf("%s takes %d operand(s)", sub, operands))
	}
	f, err := loadConfig(*path)
	if err != nil {
		return fail(stderr, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	q, closeQ, err := quarantine.Load(ctx, f, log)
	if err != nil {
		return fail(stderr, err)
	}
	defer closeQ()
	who := os.Getenv("SUDO_USER")
	if who == "" {
		who = os.Getenv("USER")
	}
	by := quarantine.Actor{Name: "cli:" + who, Admin: true}
	switch sub {
	case "list":
		qu := quarantine.Query{Sender: sender, Rcpt: rcptSub, Kind: quarantine.Kind(kind), Limit: 1 << 30}
		if kind != "" && kind != "spam" && kind != "virus" && kind != "policy" {
			return usageError(stderr, "quarantine", "--kind: want spam, virus or policy")
		}
		if since != "" {
			if qu.Since, err = parseSince(since); err != nil {
				return usageError(stderr, "quarantine", "--since: "+err.Error())
			}
		}
		recs, _, err := q.List(ctx, qu)
		if err != nil {
			return fail(stderr, err)
		}
		return printList(stdout, recs, jsonOut)
	case "show":
		return showRecord(ctx, q, sfs.Arg(0), stdout, stderr)
	case "release":
		out, err := q.Release(ctx, sfs.Arg(0), rcptsOrNil(rcpts), by)
		for _, r := range out {
			fmt.Fprintf(stdout, "%s: %s (%s)\n", r.Addr, r.State, r.Reply)
		}
		if err != nil {
			return fail(stderr, err)
		}
		for _, r := range out {
			if r.State != quarantine.StateReleased {
				return 1
			}
		}
		return 0
	case "delete":
		if err := q.Delete(ctx, sfs.Arg(0), nil, by); err != nil {
			return fail(stderr, err)
		}
		fmt.Fprintf(stdout, "%s: deleted\n", sfs.Arg(0))
	case "learn":
		class, id := sfs.Arg(0), sfs.Arg(1)
		switch class {
		case "spam":
			err = q.MarkSpam(ctx, id, by)
		case "ham":
			_, err = q.MarkHam(ctx, id, nil, false, by)
		default:
			return usageError(stderr, "quarantine", "learn: want spam or ham")
		}
		if err != nil {
			return fail(stderr, err)
		}
		fmt.Fprintf(stdout, "%s: learned as %s\n", id, class)
	case "purge":
		n, err := q.Purge(ctx, time.Now())
		if err != nil {
			return fail(stderr, err)
		}
		fmt.Fprintf(stdout, "purged %d\n", n)
	}
	return 0
}

func rcptsOrNil(l listFlag) []string {
	if len(l) == 0 {
		return nil
	}
	return l
}

// parseSince reads a duration back from now ("24h", "7d") or a date ("2026-12-01", RFC 3339).
func parseSince(s string) (time.Time, error) {
	if d, err := parseDays(s); err == nil {
		return time.Now().Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (24h, 7d) nor a date (2026-12-01)", s)
}

func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := time.ParseDuration(n + "h")
		return d * 24, err
	}
	return time.ParseDuration(s)
}

func printList(w io.Writer, recs []quarantine.Record, asJSON bool) int {
	if asJSON {
		if recs == nil {
			recs = []quarantine.Record{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(recs); err != nil {
			return 1
		}
		return 0
	}
	for _, r := range recs {
		var held []string
		for _, rc := range r.Recipients {
			if rc.State == quarantine.StateHeld {
				held = append(held, rc.Addr)
			}
		}
		fmt.Fprintf(w, "%s  %s  %-6s %6.1f  %s -> %s  %q\n", r.ID, r.Time.Format(time.RFC3339), r.Kind, r.Score,
			orDash(r.Sender), strings.Join(held, ","), r.Subject)
	}
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "<>"
	}
	return s
}

// showRecord prints the record, the reasons, the header block and the start of the text.
func showRecord(ctx context.Context, q *quarantine.Quarantine, id string, stdout, stderr io.Writer) int {
	rec, err := q.Get(ctx, id)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "ref: %s\nmode: %s\ntime: %s\nexpires: %s\nqueue id: %s\nclient: %s [%s] helo %s\nsender: %s\nkind: %s\nscore: %.1f\nsize: %d\n",
		rec.ID, rec.Mode, rec.Time.Format(time.RFC3339), rec.Expires.Format(time.RFC3339), rec.QueueID, rec.ClientName,
		rec.ClientAddr, rec.Helo, orDash(rec.Sender), rec.Kind, rec.Score, rec.Size)
	for _, r := range rec.Recipients {
		fmt.Fprintf(stdout, "recipient: %s %s %s\n", r.Addr, r.State, r.Reply)
	}
	for _, r := range rec.Reasons {
		fmt.Fprintf(stdout, "reason: %s\n", r)
	}
	for _, c := range rec.Checks {
		fmt.Fprintf(stdout, "check: %s %s %s %s %.1f\n", c.Stage, c.Check, c.Verdict, c.Reason, c.Score)
	}
	body, err := q.Open(ctx, id)
	if err != nil {
		fmt.Fprintln(stdout, "(no copy: "+err.Error()+")")
		return 0
	}
	defer body.Close()
	fmt.Fprintln(stdout)
	sc := bufio.NewScanner(io.LimitReader(body, 64<<10))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintln(stdout, sc.Text())
	}
	return 0
}
