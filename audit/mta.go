package audit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Where the MTA step looks when neither --postconf-dir nor --sendmail-cf is given.
var (
	defaultPostfixDir = "/etc/postfix"
	defaultSendmailCF = "/etc/mail/sendmail.cf"
)

// checkMTA finds the local MTA's configuration and checks it: Postfix through postconf, Sendmail through
// its sendmail.cf.
func (a *auditor) checkMTA(ctx context.Context) {
	switch {
	case a.opts.PostconfDir != "":
		a.checkPostfix(ctx, a.opts.PostconfDir)
	case a.opts.SendmailCF != "":
		a.checkSendmail(a.opts.SendmailCF)
	case fileExists(filepath.Join(defaultPostfixDir, "main.cf")):
		a.checkPostfix(ctx, defaultPostfixDir)
	case fileExists(defaultSendmailCF):
		a.checkSendmail(defaultSendmailCF)
	default:
		a.section("mta").warn("found", "give --postconf-dir DIR (Postfix) or --sendmail-cf FILE (Sendmail), or --skip-mta",
			"no local MTA configuration found (%s/main.cf, %s)", defaultPostfixDir, defaultSendmailCF)
	}
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// postconf runs `postconf -c DIR -x` (every parameter, defaults included, with $names expanded) and returns
// the parameters.
func (a *auditor) postconf(ctx context.Context, dir string) (map[string]string, error) {
	bin := a.opts.Postconf
	if bin == "" {
		bin = "postconf"
	}
	if _, err := exec.LookPath(bin); err != nil && !strings.Contains(bin, "/") {
		if fileExists("/usr/sbin/postconf") {
			bin = "/usr/sbin/postconf"
		}
	}
	sctx, cancel := a.step(ctx)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(sctx, bin, "-c", dir, "-x")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -c %s -x: %w: %s", bin, dir, err, strings.TrimSpace(stderr.String()))
	}
	return parsePostconf(out), nil
}

// parsePostconf reads postconf's "name = value" lines.
func parsePostconf(out []byte) map[string]string {
	params := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		params[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return params
}

// postfixList splits a Postfix list value (commas and/or white space; "{ … }" groups kept whole).
func postfixList(v string) []string {
	var out []string
	depth, start := 0, -1
	for i, r := range v + " " {
		switch {
		case r == '{':
			if depth == 0 && start < 0 {
				start = i
			}
			depth++
		case r == '}':
			depth--
		case depth == 0 && (r == ',' || r == ' ' || r == '\t' || r == '\n'):
			if start >= 0 {
				out = append(out, v[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	return out
}

// checkPostfix checks the Postfix instance whose config_directory is dir.
func (a *auditor) checkPostfix(ctx context.Context, dir string) {
	s := a.section("postfix")
	p, err := a.postconf(ctx, dir)
	if err != nil {
		s.fail("postconf", "give --postconf-dir the directory that holds main.cf", "%v", err)
		return
	}
	a.checkPostfixParams(s, p)
}

// checkPostfixParams is checkPostfix on postconf's output.
func (a *auditor) checkPostfixParams(s section, p map[string]string) {
	milters := postfixList(p["smtpd_milters"])
	switch {
	case len(milters) == 0:
		s.fail("smtpd_milters", fmt.Sprintf("smtpd_milters = %s", a.postfixMilterHint()), "smtpd_milters is empty: moat sees no mail")
	case a.namesMoat(milters, postfixMilterAddr):
		s.pass("smtpd_milters", "smtpd_milters = %s", p["smtpd_milters"])
	default:
		s.fail("smtpd_milters", fmt.Sprintf("add moat's socket: smtpd_milters = %s", a.postfixMilterHint()),
			"smtpd_milters = %s does not name moat's socket (%s)", p["smtpd_milters"], a.listenList())
	}

	switch act := p["milter_default_action"]; act {
	case "tempfail":
		s.pass("milter_default_action", "milter_default_action = tempfail: mail waits while moat is down")
	case "accept":
		s.fail("milter_default_action", "milter_default_action = tempfail",
			"milter_default_action = accept: while moat is down mail passes unchecked")
	default:
		s.warn("milter_default_action", "milter_default_action = tempfail",
			"milter_default_action = %s: while moat is down senders get a permanent error or mail is lost", act)
	}

	a.checkPostfixRelay(s, p)

	if p["smtpd_tls_auth_only"] == "yes" {
		s.pass("smtpd_tls_auth_only", "smtpd_tls_auth_only = yes: AUTH only after STARTTLS")
	} else {
		s.fail("smtpd_tls_auth_only", "smtpd_tls_auth_only = yes",
			"smtpd_tls_auth_only = %s: passwords may cross the network in clear", orEmpty(p["smtpd_tls_auth_only"]))
	}
	if p["disable_vrfy_command"] == "yes" {
		s.pass("disable_vrfy_command", "disable_vrfy_command = yes")
	} else {
		s.warn("disable_vrfy_command", "disable_vrfy_command = yes",
			"disable_vrfy_command = %s: VRFY tells anyone which addresses exist", orEmpty(p["disable_vrfy_command"]))
	}
	checkSizeLimit(s, "message_size_limit", p["message_size_limit"], "message_size_limit = 52428000")
}

// checkPostfixRelay checks that unauthorised relaying is refused: reject_unauth_destination (or defer_…) in
// smtpd_relay_restrictions or, with that empty, in smtpd_recipient_restrictions, before any unconditional
// permit; and that mynetworks is not wide.
func (a *auditor) checkPostfixRelay(s section, p map[string]string) {
	key := "smtpd_relay_restrictions"
	list := postfixList(p[key])
	if len(list) == 0 {
		key = "smtpd_recipient_restrictions"
		list = postfixList(p[key])
	}
	fix := "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
	guarded := false
	for _, r := range list {
		if r == "reject_unauth_destination" || r == "defer_unauth_destination" {
			guarded = true
			break
		}
		if r == "permit" {
			break // everything reaching it is permitted: an open relay
		}
	}
	if guarded {
		s.pass("relay", "%s = %s", key, p[key])
	} else {
		s.fail("relay", fix, "%s = %s: no reject_unauth_destination before a permit: an open relay", key, orEmpty(p[key]))
	}
	for _, n := range postfixList(p["mynetworks"]) {
		pfx, err := netip.ParsePrefix(strings.Trim(n, "[]"))
		if err != nil {
			continue // a table or a host name: not judged
		}
		if (pfx.Addr().Is4() && pfx.Bits() < 8) || (pfx.Addr().Is6() && pfx.Bits() < 16) {
			s.fail("mynetworks", "list only your own networks in mynetworks",
				"mynetworks holds %s: every client in it may relay", n)
		}
	}
}

// checkSizeLimit judges a message size limit in bytes: 0 (unlimited) fails, above 200 MB or below 1 MB warns.
func checkSizeLimit(s section, key, value, fix string) {
	n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
	switch {
	case err != nil:
		s.warn(key, fix, "%s = %q: not a number", key, value)
	case n <= 0:
		s.fail(key, fix, "%s = %d: no limit, one client can fill the disk", key, n)
	case n > 200<<20:
		s.warn(key, fix, "%s = %d: more than 200 MB", key, n)
	case n < 1<<20:
		s.warn(key, fix, "%s = %d: less than 1 MB refuses ordinary attachments", key, n)
	default:
		s.pass(key, "%s = %d (%d MB)", key, n, n>>20)
	}
}

func orEmpty(v string) string {
	if v == "" {
		return `""`
	}
	return v
}

// postfixMilterAddr turns a Postfix milter entry ("unix:/path", "inet:host:port", "{ inet:… , … }") into
// moat's listen form ("unix:/path", "tcp:host:port").
func postfixMilterAddr(m string) string {
	m = strings.TrimSpace(strings.TrimPrefix(m, "{"))
	if i := strings.IndexAny(m, ", }"); i >= 0 {
		m = m[:i]
	}
	switch {
	case strings.HasPrefix(m, "inet:"):
		return "tcp:" + strings.TrimPrefix(m, "inet:")
	case strings.HasPrefix(m, "unix:"):
		return m
	case strings.HasPrefix(m, "/"):
		return "unix:" + m
	}
	return m
}

// sendmailMilterAddr turns a Sendmail S= value ("unix:/path", "local:/path", "inet:PORT@HOST") into moat's
// listen form.
func sendmailMilterAddr(m string) string {
	m = strings.TrimSpace(m)
	switch {
	case strings.HasPrefix(m, "inet:"), strings.HasPrefix(m, "inet6:"):
		hp := m[strings.IndexByte(m, ':')+1:]
		port, host, ok := strings.Cut(hp, "@")
		if !ok {
			return m
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return "tcp:" + host + ":" + port
	case strings.HasPrefix(m, "local:"):
		return "unix:" + strings.TrimPrefix(m, "local:")
	}
	return m
}

// namesMoat reports whether one of the MTA's milter entries is one of moat's listen sockets; without moat's
// configuration, whether one names moat (a path or name containing "moat", or moat's usual port 7357).
func (a *auditor) namesMoat(entries []string, conv func(string) string) bool {
	for _, e := range entries {
		addr := conv(e)
		if len(a.opts.MilterListen) == 0 {
			if strings.Contains(strings.ToLower(e), "moat") || strings.HasSuffix(addr, ":7357") {
				return true
			}
			continue
		}
		for _, l := range a.opts.MilterListen {
			if sameSocket(l, addr) {
				return true
			}
		}
	}
	return false
}

// sameSocket compares two listen addresses, treating localhost and 127.0.0.1 alike.
func sameSocket(a, b string) bool {
	norm := func(s string) string {
		s = strings.ToLower(strings.TrimSpace(s))
		s = strings.Replace(s, "tcp:localhost:", "tcp:127.0.0.1:", 1)
		if rest, ok := strings.CutPrefix(s, "unix:"); ok {
			return "unix:" + filepath.Clean(rest)
		}
		return s
	}
	return norm(a) == norm(b)
}

func (a *auditor) listenList() string {
	if len(a.opts.MilterListen) == 0 {
		return "moat's [milter] listen not known: give -c"
	}
	return "moat listens on " + strings.Join(a.opts.MilterListen, ", ")
}

func (a *auditor) postfixMilterHint() string {
	for _, l := range a.opts.MilterListen {
		if rest, ok := strings.CutPrefix(l, "tcp:"); ok {
			return "inet:" + rest
		}
		return l
	}
	return "unix:/run/moat/moat.sock"
}

// sendmailMilter is one X line of sendmail.cf: Xname, S=…, F=…, T=….
type sendmailMilter struct {
	Name, Socket, Flags string
}

// sendmailCF is what the audit reads from sendmail.cf: the milters, the O options.
type sendmailCF struct {
	Milters []sendmailMilter
	Options map[string]string
}

func parseSendmailCF(data []byte) sendmailCF {
	cf := sendmailCF{Options: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "X"):
			name, rest, _ := strings.Cut(line[1:], ",")
			m := sendmailMilter{Name: strings.TrimSpace(name)}
			for _, f := range strings.Split(rest, ",") {
				k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
				switch strings.ToUpper(strings.TrimSpace(k)) {
				case "S":
					m.Socket = strings.TrimSpace(v)
				case "F":
					m.Flags = strings.TrimSpace(v)
				}
			}
			cf.Milters = append(cf.Milters, m)
		case strings.HasPrefix(line, "O "):
			k, v, _ := strings.Cut(line[2:], "=")
			cf.Options[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return cf
}

// checkSendmail checks a sendmail.cf: moat's milter defined and in InputMailFilters, F=T, PrivacyOptions,
// MaxMessageSize.
func (a *auditor) checkSendmail(path string) {
	s := a.section("sendmail")
	data, err := os.ReadFile(path)
	if err != nil {
		s.fail("sendmail.cf", "give --sendmail-cf the path of the sendmail.cf in use", "%v", err)
		return
	}
	cf := parseSendmailCF(data)
	var moat *sendmailMilter
	for i := range cf.Milters {
		m := &cf.Milters[i]
		if a.namesMoat([]string{m.Socket}, sendmailMilterAddr) || (len(a.opts.MilterListen) == 0 && strings.EqualFold(m.Name, "moat")) {
			moat = m
			break
		}
	}
	hint := "INPUT_MAIL_FILTER(`moat', `S=inet:7357@127.0.0.1, F=T, T=C:10s;S:10s;R:30s;E:5m') in sendmail.mc, then rebuild sendmail.cf"
	if moat == nil {
		s.fail("milter", hint, "no milter in %s names moat's socket (%s)", path, a.listenList())
	} else {
		inputs := strings.Split(cf.Options["InputMailFilters"], ",")
		listed := false
		for _, n := range inputs {
			listed = listed || strings.TrimSpace(n) == moat.Name
		}
		if listed {
			s.pass("milter", "X%s, S=%s, in InputMailFilters", moat.Name, moat.Socket)
		} else {
			s.fail("milter", hint, "milter %s is defined but not in InputMailFilters (%s): it is never called", moat.Name, orEmpty(cf.Options["InputMailFilters"]))
		}
		switch {
		case strings.Contains(moat.Flags, "T"):
			s.pass("F=T", "F=%s: mail is tempfailed while moat is down", moat.Flags)
		case strings.Contains(moat.Flags, "R"):
			s.warn("F=T", "F=T in INPUT_MAIL_FILTER", "F=%s: mail is rejected (permanently) while moat is down", moat.Flags)
		default:
			s.fail("F=T", "F=T in INPUT_MAIL_FILTER", "F=%s: while moat is down mail passes unchecked", orEmpty(moat.Flags))
		}
	}

	priv := map[string]bool{}
	for _, o := range strings.Split(strings.ToLower(cf.Options["PrivacyOptions"]), ",") {
		priv[strings.TrimSpace(o)] = true
	}
	if priv["goaway"] || (priv["novrfy"] && priv["noexpn"]) {
		s.pass("PrivacyOptions", "PrivacyOptions=%s", cf.Options["PrivacyOptions"])
	} else {
		s.warn("PrivacyOptions", "define(`confPRIVACY_FLAGS', `authwarnings,novrfy,noexpn,restrictqrun') in sendmail.mc",
			"PrivacyOptions=%s: VRFY or EXPN tell anyone which addresses exist", orEmpty(cf.Options["PrivacyOptions"]))
	}
	size := cf.Options["MaxMessageSize"]
	if size == "" {
		size = "0" // unset: no limit
	}
	checkSizeLimit(s, "MaxMessageSize", size, "define(`confMAX_MESSAGE_SIZE', `52428800') in sendmail.mc")
}
