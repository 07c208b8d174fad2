package main

// The review page ([web], package web): moat passwd writes the administrators' password file, moat
// quarantine digest mails each recipient its held mail, and serve starts the page when the table is present.
import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/quarantine"
	"github.com/moatmail/moat/web"
)

func init() {
	commands["passwd"] = command{summary: "add an administrator of the review page, or change a password ([web] passwords)",
		run: runPasswd, usage: "[-c FILE] [-f PASSWORD-FILE] [--stdin] USER"}
}

// stdin is the terminal or pipe moat passwd reads from; tests replace it.
var stdin io.Reader = os.Stdin

func runPasswd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	path := configFlag(fs)
	file := fs.String("f", "", "the password `file` (default: [web] passwords of the configuration)")
	fromStdin := fs.Bool("stdin", false, "read the password from standard input (one line) instead of the terminal")
	if code, ok := parseFlags("passwd", fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, "passwd", "give one user name")
	}
	user := fs.Arg(0)
	if err := web.ValidUser(user); err != nil {
		return usageError(stderr, "passwd", err.Error())
	}
	target := *file
	if target == "" {
		f, err := loadConfig(*path)
		if err != nil {
			return fail(stderr, err)
		}
		sec := f.Section(web.Table)
		var c struct {
			Passwords string `toml:"passwords"`
		}
		if err := sec.Pick("passwords").Decode(&c); err != nil {
			return fail(stderr, err)
		}
		if c.Passwords == "" {
			return fail(stderr, sec.Errorf("passwords", "not set: give the file with -f or set [web] passwords"))
		}
		target = f.Abs(c.Passwords)
	}
	pw, err := readNewPassword(*fromStdin, stderr)
	if err != nil {
		return fail(stderr, err)
	}
	if err := web.SetPassword(target, user, pw); err != nil {
		return fail(stderr, fmt.Errorf("%s: %w", target, err))
	}
	fmt.Fprintf(stdout, "%s: password of %s set\n", target, user)
	return 0
}

// readNewPassword reads a password twice from the terminal (not echoed), or once from standard input.
func readNewPassword(fromStdin bool, stderr io.Writer) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	f, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("standard input is not a terminal: give the password with --stdin")
	}
	fmt.Fprint(stderr, "New password: ")
	first, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(stderr, "Again: ")
	second, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	if string(first) != string(second) {
		return "", errors.New("the passwords differ; nothing changed")
	}
	return string(first), nil
}

// openReview builds the review page of f over its quarantine; nil without a [web] table.
func openReview(f *config.File, log *slog.Logger) (*web.Server, func() error, error) {
	wc, err := web.LoadConfig(f)
	if err != nil || !wc.Enabled() {
		return nil, nil, err
	}
	q, closeQ, err := quarantine.FromConfig(f, log)
	if err != nil {
		return nil, nil, err
	}
	if q == nil {
		return nil, nil, f.Section(web.Table).Errorf("", "the review page needs a [quarantine] table")
	}
	srv, err := web.New(wc, q, log)
	if err != nil {
		closeQ()
		return nil, nil, err
	}
	return srv, closeQ, nil
}

// startReview starts the review page of serve and its digest timer; the returned function stops both.
func startReview(f *config.File, log *slog.Logger) (stop func(), err error) {
	srv, closeQ, err := openReview(f, log)
	if err != nil || srv == nil {
		return func() {}, err
	}
	if err := srv.Listen(); err != nil {
		closeQ()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if err := srv.Serve(); err != nil {
			log.Error("review page failed", "err", err)
		}
	}()
	wc, _ := web.LoadConfig(f)
	if wc.DigestsEnabled() {
		go srv.RunDigests(ctx)
	}
	log.Info("review page listening", "addr", srv.Addr().String(), "tls", wc.TLS(), "digests", wc.DigestsEnabled())
	return func() {
		cancel()
		_ = srv.Close()
		_ = closeQ()
	}, nil
}

// runDigest is moat quarantine digest.
func runDigest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("quarantine digest", flag.ContinueOnError)
	path := configFlag(fs)
	since := fs.Duration("since", 24*time.Hour, "mail only recipients with mail held within this `duration`")
	if code, ok := parseFlags("quarantine", fs, args, stdout, stderr); !ok {
		return code
	}
	if code, ok := noOperands("quarantine", fs, stderr); !ok {
		return code
	}
	f, err := loadConfig(*path)
	if err != nil {
		return fail(stderr, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, closeQ, err := openReview(f, log)
	if err == nil && srv == nil {
		err = errors.New("no [web] table: digests are part of the review page")
	}
	if err != nil {
		return fail(stderr, err)
	}
	defer closeQ()
	n, err := srv.SendDigests(context.Background(), time.Now().Add(-*since))
	fmt.Fprintf(stdout, "digests sent: %d\n", n)
	if err != nil {
		return fail(stderr, err)
	}
	return 0
}
