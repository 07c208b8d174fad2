package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/moatmail/moat/policy"
)

// scanReport is what `moat scan` prints: moat's equivalent of rspamc's output.
type scanReport struct {
	Action         string       `json:"action"`
	SMTPCode       int          `json:"smtp_code"`
	SMTPText       string       `json:"smtp_text"`
	Score          float64      `json:"score"`
	Checks         []scanCheck  `json:"checks"`
	HeadersAdded   []scanHeader `json:"headers_added"`
	HeadersRemoved []scanHeader `json:"headers_removed"`
	Ref            string       `json:"ref"`
	ClientIP       string       `json:"client_ip"` // the client the transaction was judged as coming from (--ip)
	Recipients     []scanRcpt   `json:"recipients"`
	DryRun         []string     `json:"dry_run,omitempty"`
	Stage          string       `json:"stage"`
	Reason         string       `json:"reason,omitempty"`
	Errors         []string     `json:"errors,omitempty"`
}

type scanCheck struct {
	Name    string  `json:"name"`
	Stage   string  `json:"stage"`
	Result  string  `json:"result"`
	Verdict string  `json:"verdict"`
	Reason  string  `json:"reason,omitempty"`
	Score   float64 `json:"score"`
	Detail  string  `json:"detail,omitempty"`
	Error   string  `json:"error,omitempty"`
	Rcpt    string  `json:"rcpt,omitempty"`
	DryRun  bool    `json:"dry_run,omitempty"`
	Ms      float64 `json:"ms"`
}

type scanHeader struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
	Index int    `json:"index,omitempty"`
}

type scanRcpt struct {
	Address  string `json:"address"`
	Action   string `json:"action"`
	SMTPCode int    `json:"smtp_code,omitempty"`
	SMTPText string `json:"smtp_text,omitempty"`
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// scanInput is one offline transaction.
type scanInput struct {
	IP, Helo, From, Auth string
	Rcpts                []string
	TLS, Local           bool
	UpdateState          bool
	Message              io.Reader
}

func runScan(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	in := scanInput{}
	var rcpts listFlag
	fs.StringVar(&in.IP, "ip", "127.0.0.1", "client IP address (access checks may trust loopback: give the real client's; \"\" means no IP and an untrusted session)")
	fs.StringVar(&in.Helo, "helo", "localhost", "HELO name")
	fs.StringVar(&in.From, "from", "", "envelope sender (default: the message's From address; \"<>\" for the null sender)")
	fs.Var(&rcpts, "rcpt", "envelope recipient (repeat for several; default: the message's To addresses)")
	fs.StringVar(&in.Auth, "auth", "", "SMTP AUTH user name (the client authenticated as this user)")
	fs.BoolVar(&in.TLS, "tls", false, "the client used TLS")
	fs.BoolVar(&in.Local, "local", false, "judge it as a local submission (no network client; overrides --ip)")
	fs.BoolVar(&in.UpdateState, "update-state", false, "let stateful checks (greylisting) record this transaction")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	in.Rcpts = rcpts
	var r io.Reader = os.Stdin
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "moat scan: one message at most")
		return 2
	}
	if fs.NArg() == 1 && fs.Arg(0) != "-" {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			fmt.Fprintln(stderr, "moat scan: "+err.Error())
			return 1
		}
		defer f.Close()
		r = f
	}
	in.Message = r
	// Log lines go to stderr, the report to stdout, so that the JSON can be piped.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	_, eng, err := loadAll(*path, log)
	if err != nil {
		return fail(stderr, err)
	}
	defer eng.Retire()
	rep, err := scan(context.Background(), eng, in)
	if err != nil {
		fmt.Fprintln(stderr, "moat scan: "+err.Error())
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintln(stderr, "moat scan: "+err.Error())
		return 1
	}
	return 0
}

// scan runs one transaction through a policy.Transaction, stage by stage as the milter does, stopping at the
// first answer that ends it.
func scan(ctx context.Context, eng *policy.Engine, in scanInput) (*scanReport, error) {
	raw, err := io.ReadAll(in.Message)
	if err != nil {
		return nil, fmt.Errorf("read message: %w", err)
	}
	headers, body, err := policy.ParseHeaderBlock(normalizeCRLF(raw))
	if err != nil {
		return nil, err
	}
	s := policy.NewSession()
	s.ReadOnly = !in.UpdateState
	if in.Local {
		in.IP = ""
		s.Set(policy.FactLocalSubmission, "yes")
	}
	if in.IP != "" {
		ip, err := netip.ParseAddr(in.IP)
		if err != nil {
			return nil, fmt.Errorf("--ip: %w", err)
		}
		s.ClientIP = ip.Unmap()
		s.ClientName = "[" + ip.String() + "]"
	}
	if in.TLS {
		s.TLS = policy.TLSInfo{Version: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", CipherBits: "256"}
	}
	s.Auth = policy.AuthInfo{Authen: in.Auth}
	if in.Auth != "" {
		s.Auth.Type = "PLAIN"
	}
	from := in.From
	if from == "" {
		from = firstAddress(headerValue(headers, "From"))
	}
	if from == "<>" {
		from = ""
	}
	rcpts := in.Rcpts
	if len(rcpts) == 0 {
		for _, name := range []string{"To", "Cc"} {
			for _, a := range strings.Split(headerValue(headers, name), ",") {
				if addr := firstAddress(a); addr != "" {
					rcpts = append(rcpts, addr)
				}
			}
		}
	}
	if len(rcpts) == 0 {
		return nil, errors.New("no recipient: give --rcpt or a To: header")
	}

	rep := &scanReport{ClientIP: in.IP}
	// The same Transaction as the milter's, fed from the flags and the message file.
	tx := policy.NewTransaction(eng, s, policy.SpoolSettings{Memory: 1 << 20})
	defer tx.Abort()
	done := func(stage policy.Stage, d policy.Decision) (*scanReport, error) {
		rep.fill(s, stage, d, 0)
		return rep, nil
	}
	s.Helo = in.Helo
	if d := tx.Connect(ctx); d.Action != policy.ActContinue {
		return done(policy.StageConnect, d)
	}
	if d := tx.Helo(ctx); d.Action != policy.ActContinue {
		return done(policy.StageHelo, d)
	}
	if d := tx.Mail(ctx, policy.MailCommand{From: from}); d.Action != policy.ActContinue {
		return done(policy.StageMail, d)
	}
	var last policy.Decision
	for _, rc := range rcpts {
		d := tx.Rcpt(ctx, rc, "")
		last = d
		if d.Action == policy.ActDiscard {
			return done(policy.StageRcpt, d)
		}
	}
	if len(s.AcceptedRcpts()) == 0 {
		return done(policy.StageRcpt, last)
	}
	for _, h := range headers {
		tx.Header(h.Name, h.Value)
	}
	if d := tx.EndHeaders(ctx); d.Action != policy.ActContinue {
		return done(policy.StageHeaders, d)
	}
	tx.Body(body)
	out := tx.EOM(ctx)
	rep.fill(s, policy.StageEOM, out.Decision, out.Score)
	for _, h := range out.InsertHeaders {
		rep.HeadersAdded = append(rep.HeadersAdded, scanHeader{Name: h.Name, Value: strings.TrimPrefix(h.Value, " ")})
	}
	for _, h := range out.AddHeaders {
		rep.HeadersAdded = append(rep.HeadersAdded, scanHeader{Name: h.Name, Value: strings.TrimPrefix(h.Value, " ")})
	}
	for _, h := range out.RemoveHeaders {
		rep.HeadersRemoved = append(rep.HeadersRemoved, scanHeader{Name: h.Name, Index: h.Index})
	}
	return rep, nil
}

func (rep *scanReport) fill(s *policy.Session, stage policy.Stage, d policy.Decision, score float64) {
	rep.Ref = s.Ref
	rep.Stage = stage.String()
	rep.Score = score
	rep.DryRun = d.DryRun
	if d.Reason != "" {
		rep.Reason = d.Check + "/" + d.Reason
	}
	switch d.Action {
	case policy.ActReject, policy.ActTempfail:
		rep.Action = d.Action.String()
		rep.SMTPCode = d.Reply.Code
		rep.SMTPText = d.Reply.Enhanced + " " + d.Reply.Text
	case policy.ActDiscard:
		rep.Action, rep.SMTPCode, rep.SMTPText = "discard", 250, "2.0.0 Ok"
	case policy.ActQuarantine:
		rep.Action, rep.SMTPCode, rep.SMTPText = "quarantine", 250, "2.0.0 Ok"
	default:
		rep.Action, rep.SMTPCode, rep.SMTPText = "accept", 250, "2.0.0 Ok"
	}
	add := func(f policy.Finding, rcpt string) {
		c := scanCheck{Name: f.Check, Stage: f.Stage.String(), Result: string(f.Status), Verdict: f.Verdict.String(),
			Reason: f.Reason, Score: f.Score, Detail: f.Detail, Rcpt: rcpt, DryRun: f.DryRun,
			Ms: float64(f.Elapsed.Microseconds()) / 1000}
		if f.DryRun {
			c.Verdict = f.WouldBe.String()
		}
		if f.Err != nil {
			c.Error = f.Err.Error()
			rep.Errors = append(rep.Errors, f.Check+": "+f.Err.Error())
		}
		rep.Checks = append(rep.Checks, c)
	}
	for _, f := range s.Findings() {
		add(f, "")
	}
	for _, r := range s.Rcpts {
		for _, f := range r.Findings {
			add(f, r.Addr.String())
		}
		sr := scanRcpt{Address: r.Addr.String(), Action: "accept"}
		if !r.Accepted() {
			sr.Action = r.Decision.Action.String()
			sr.SMTPCode = r.Decision.Reply.Code
			sr.SMTPText = r.Decision.Reply.Enhanced + " " + r.Decision.Reply.Text
		}
		rep.Recipients = append(rep.Recipients, sr)
	}
	if rep.Checks == nil {
		rep.Checks = []scanCheck{}
	}
	if rep.HeadersAdded == nil {
		rep.HeadersAdded = []scanHeader{}
	}
	if rep.HeadersRemoved == nil {
		rep.HeadersRemoved = []scanHeader{}
	}
}

// normalizeCRLF gives the message CRLF line ends, as the MTA passes it to a milter.
func normalizeCRLF(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

func headerValue(hs []policy.Header, name string) string {
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			return strings.TrimSpace(strings.ReplaceAll(h.Value, "\r\n", ""))
		}
	}
	return ""
}

// firstAddress extracts the address from "Name <a@b>" or "a@b".
func firstAddress(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return v[i+1 : i+j]
		}
	}
	if strings.Contains(v, "@") && !strings.ContainsAny(v, " \t") {
		return v
	}
	return ""
}
