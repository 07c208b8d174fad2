package main

// `moat audit`: the security checklist run against a live domain, its MX hosts, the local MTA and moat's own
// configuration.
import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/moatmail/moat/audit"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
)

func init() {
	commands["audit"] = command{summary: "check a mail domain, its MX hosts, the local MTA and moat's configuration against the security checklist", run: runAudit,
		usage: "[-c FILE] [--json] [--dns HOST:PORT] [--connect HOST:PORT] [--postconf-dir DIR|--sendmail-cf FILE] [flags] DOMAIN"}
}

// stringsFlag is a flag that may be given several times, or once with commas.
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// runAudit runs the audit and prints the table (or JSON). Exit status: 0 nothing failed, 1 something failed
// (or the configuration could not be read), 2 bad usage.
func runAudit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: moat audit [flags] DOMAIN")
		fs.PrintDefaults()
	}
	path := configFlag(fs)
	jsonOut := fs.Bool("json", false, "print one JSON object instead of the table")
	var dnsServers stringsFlag
	fs.Var(&dnsServers, "dns", "DNS server `host:port` to ask (repeatable; default: [dns] of the configuration, else /etc/resolv.conf)")
	smtpPort := fs.Int("smtp-port", 25, "SMTP `port` of each MX")
	connect := fs.String("connect", "", "dial `host:port` for every MX instead of its own address")
	helo := fs.String("helo", "", "`name` the audit announces in EHLO (default moat-audit.invalid)")
	caFile := fs.String("ca-file", "", "PEM `file` of the CAs that verify MX and MTA-STS certificates (default: the system's)")
	stsURL := fs.String("mta-sts-url", "", "fetch the MTA-STS policy from this `URL` instead of https://mta-sts.DOMAIN/.well-known/mta-sts.txt")
	postconfDir := fs.String("postconf-dir", "", "Postfix config_directory `dir` to audit (default /etc/postfix when it has main.cf)")
	postconf := fs.String("postconf", "", "postconf `binary` (default: postconf in PATH or /usr/sbin)")
	sendmailCF := fs.String("sendmail-cf", "", "sendmail.cf `file` to audit (default /etc/mail/sendmail.cf)")
	skipSMTP := fs.Bool("skip-smtp", false, "do not connect to the MX hosts")
	skipMTA := fs.Bool("skip-mta", false, "do not audit the local MTA's configuration")
	timeout := fs.Duration("timeout", 2*time.Minute, "bound on the whole run")
	stepTimeout := fs.Duration("step-timeout", 10*time.Second, "bound on each network step (one DNS query, one SMTP reply, one HTTPS fetch)")

	// Flags may come before and after the domain.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return 2
	}
	if *timeout <= 0 || *stepTimeout <= 0 || *smtpPort <= 0 || *smtpPort > 65535 {
		fmt.Fprintln(stderr, "moat: audit: --timeout and --step-timeout must be positive, --smtp-port 1-65535")
		return 2
	}
	configGiven := false
	fs.Visit(func(f *flag.Flag) { configGiven = configGiven || f.Name == "c" })

	opts := audit.Options{
		Domain: positional[0], DNSServers: dnsServers, SMTPPort: *smtpPort, Connect: *connect, HeloName: *helo,
		MTASTSURL: *stsURL, SkipSMTP: *skipSMTP, PostconfDir: *postconfDir, Postconf: *postconf,
		SendmailCF: *sendmailCF, SkipMTA: *skipMTA, StepTimeout: *stepTimeout,
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fail(stderr, fmt.Errorf("audit: --ca-file: %w", err))
		}
		opts.RootCAs = x509.NewCertPool()
		if !opts.RootCAs.AppendCertsFromPEM(pem) {
			return fail(stderr, fmt.Errorf("audit: --ca-file %s: no PEM certificate in it", *caFile))
		}
	}
	// The default moat.toml is audited when it exists; a file named with -c must exist.
	if _, err := os.Stat(*path); configGiven || err == nil {
		f, err := config.Load(*path)
		if err != nil {
			return fail(stderr, err)
		}
		opts.Config = f
		opts.ConfigErr = validateForAudit(f)
		if mc, err := loadMilterConfig(f); err == nil {
			opts.MilterListen = mc.Listen
		} else if opts.ConfigErr == nil {
			opts.ConfigErr = err
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rep, err := audit.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "moat: "+err.Error())
		if errors.Is(err, audit.ErrUsage) {
			return 2
		}
		return 1
	}
	if *jsonOut {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		return fail(stderr, err)
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

// validateForAudit builds the engine the way check-config does, to report an invalid configuration, and
// retires it at once.
func validateForAudit(f *config.File) error {
	eng, err := policy.Build(f, slog.New(slog.NewTextHandler(io.Discard, nil)), services())
	if err != nil {
		return err
	}
	eng.Retire()
	return nil
}
