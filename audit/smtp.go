package audit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/moatmail/moat/rules/relay/relaytest"
)

// smtpConn is the audit's SMTP client: one command, one reply, each bounded by the step timeout.
type smtpConn struct {
	conn    net.Conn
	tp      *textproto.Conn
	timeout time.Duration
	ctx     context.Context
}

func (c *smtpConn) deadline() {
	d := time.Now().Add(c.timeout)
	if cd, ok := c.ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	_ = c.conn.SetDeadline(d)
}

// reply reads one (possibly multi-line) reply.
func (c *smtpConn) reply() (int, string, error) {
	c.deadline()
	code, msg, err := c.tp.ReadResponse(0)
	var perr textproto.ProtocolError
	if errors.As(err, &perr) {
		return 0, "", err
	}
	if err != nil && code == 0 {
		return 0, "", err
	}
	return code, msg, nil
}

// cmd sends one command and reads its reply.
func (c *smtpConn) cmd(line string) (int, string, error) {
	c.deadline()
	if err := c.tp.PrintfLine("%s", line); err != nil {
		return 0, "", err
	}
	return c.reply()
}

func (c *smtpConn) close() {
	_, _, _ = c.cmd("QUIT")
	_ = c.conn.Close()
}

// dialSMTP connects and reads the banner.
func (a *auditor) dialSMTP(ctx context.Context, addr string) (*smtpConn, int, string, error) {
	d := net.Dialer{Timeout: a.opts.StepTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, 0, "", err
	}
	c := &smtpConn{conn: conn, tp: textproto.NewConn(conn), timeout: a.opts.StepTimeout, ctx: ctx}
	code, msg, err := c.reply()
	if err != nil {
		conn.Close()
		return nil, 0, "", fmt.Errorf("banner: %w", err)
	}
	return c, code, msg, nil
}

// ehlo sends EHLO and returns the extension keywords, upper case.
func (c *smtpConn) ehlo(name string) (map[string]bool, error) {
	code, msg, err := c.cmd("EHLO " + name)
	if err != nil {
		return nil, err
	}
	if code != 250 {
		return nil, fmt.Errorf("EHLO answered %d %s", code, msg)
	}
	ext := map[string]bool{}
	for _, l := range strings.Split(msg, "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			ext[strings.ToUpper(f[0])] = true
		}
	}
	return ext, nil
}

// startTLS upgrades the connection without verifying; the certificate is checked separately so that the
// audit can say what is wrong with it.
func (c *smtpConn) startTLS(serverName string) (*tls.ConnectionState, error) {
	code, msg, err := c.cmd("STARTTLS")
	if err != nil {
		return nil, err
	}
	if code != 220 {
		return nil, fmt.Errorf("STARTTLS answered %d %s", code, msg)
	}
	tc := tls.Client(c.conn, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10})
	c.deadline()
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
	st := tc.ConnectionState()
	return &st, nil
}

// checkSMTP connects to one MX: banner, STARTTLS, TLS version and certificate, VRFY and EXPN, the relay
// battery. It never sends DATA: every relay attempt ends at the RCPT reply, then RSET.
func (a *auditor) checkSMTP(ctx context.Context, mx *mxHost) {
	s := a.section("smtp " + mx.Name)
	addr := a.opts.Connect
	if addr == "" {
		if len(mx.Addrs) == 0 {
			return // the DNS step said so
		}
		addr = net.JoinHostPort(mx.Addrs[0].String(), strconv.Itoa(a.opts.SMTPPort))
	}
	c, code, banner, err := a.dialSMTP(ctx, addr)
	if err != nil {
		s.fail("greeting", fmt.Sprintf("make %s accept SMTP connections on port %d from the internet", mx.Name, a.opts.SMTPPort), "%s: %v", addr, err)
		return
	}
	defer func() { c.close() }()
	if code != 220 {
		s.fail("greeting", "make the MTA greet with 220", "%s greets with %d %s", addr, code, banner)
		return
	}
	s.pass("greeting", "%s: 220 %s", addr, oneLine(strings.Split(banner, "\n")[0]))
	if f := strings.Fields(banner); len(f) > 0 {
		a.checkAnnounced(mx, f[0])
	}
	ext, err := c.ehlo(a.opts.HeloName)
	if err != nil {
		s.fail("ehlo", "make the MTA answer EHLO", "%v", err)
		return
	}
	a.checkVRFY(s, c)

	tlsOK := false
	if !ext["STARTTLS"] {
		s.fail("starttls", "offer STARTTLS (Postfix: smtpd_tls_security_level = may, with smtpd_tls_chain_files)", "STARTTLS is not offered")
	} else if st, err := c.startTLS(mx.Name); err != nil {
		s.fail("starttls", "give the MTA a working certificate and key", "%v", err)
		return // the connection is in an unknown state after a failed handshake
	} else {
		s.pass("starttls", "STARTTLS offered and negotiated (%s)", tls.CipherSuiteName(st.CipherSuite))
		tlsOK = true
		if st.Version >= tls.VersionTLS12 {
			s.pass("tls-version", "%s", tls.VersionName(st.Version))
		} else {
			s.fail("tls-version", "allow only TLS 1.2 and newer (Postfix: smtpd_tls_protocols = >=TLSv1.2)", "negotiated %s", tls.VersionName(st.Version))
		}
		a.checkCertificate(s, mx.Name, st)
		if _, err := c.ehlo(a.opts.HeloName); err != nil {
			s.fail("ehlo", "make the MTA answer EHLO after STARTTLS", "%v", err)
			return
		}
	}
	c = a.relayBattery(ctx, s, c, addr, mx, tlsOK)
}

// checkCertificate verifies the MX certificate for the MX name against the configured roots.
func (a *auditor) checkCertificate(s section, name string, st *tls.ConnectionState) {
	if len(st.PeerCertificates) == 0 {
		s.fail("certificate", "configure a certificate", "no certificate")
		return
	}
	leaf := st.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: a.opts.RootCAs, Intermediates: inter})
	fix := fmt.Sprintf("install a certificate for %s from a public CA (and its chain); renew it before it expires", name)
	var inv x509.CertificateInvalidError
	switch {
	case err == nil:
		s.pass("certificate", "valid for %s until %s", name, leaf.NotAfter.UTC().Format("2006-01-02"))
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		s.fail("certificate", fix, "expired on %s", leaf.NotAfter.UTC().Format("2006-01-02"))
	default:
		s.fail("certificate", fix, "not valid for %s: %v", name, err)
	}
}

// checkVRFY asks VRFY and EXPN for postmaster and for a name that surely does not exist: a 250 reply gives
// away addresses, and so do different answers for the two (they tell existing names from the others).
func (a *auditor) checkVRFY(s section, c *smtpConn) {
	nobody := "moat-audit-no-such-user-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	for _, verb := range []string{"VRFY", "EXPN"} {
		check := strings.ToLower(verb)
		fix := "turn it off (Postfix: disable_vrfy_command = yes; Sendmail: PrivacyOptions=novrfy,noexpn)"
		code, msg, err := c.cmd(verb + " postmaster")
		if err != nil {
			s.warn(check, "", "%s not answered: %v", verb, err)
			continue
		}
		code2, msg2, err := c.cmd(verb + " " + nobody)
		if err != nil {
			s.warn(check, "", "%s not answered: %v", verb, err)
			continue
		}
		switch {
		case code == 250 || code == 251:
			s.warn(check, fix, "%s postmaster answered %d %s: it confirms addresses to anyone", verb, code, oneLine(msg))
		case code/100 != code2/100:
			s.warn(check, fix, "%s answers %d for postmaster and %d for a name that does not exist: addresses can be guessed one by one",
				verb, code, code2)
		default:
			s.pass(check, "%s answered %d %s (and %d %s for an unknown name)", verb, code, oneLine(msg), code2, oneLine(msg2))
		}
	}
}

// relayBattery tries every relay form from outside and reports the ones accepted at RCPT. A connection the
// server drops (error limits) is opened again. It returns the connection in use.
func (a *auditor) relayBattery(ctx context.Context, s section, c *smtpConn, addr string, mx *mxHost, useTLS bool) *smtpConn {
	ip := strings.Trim(addr[:strings.LastIndexByte(addr, ':')], "[]")
	if len(mx.Addrs) > 0 && a.opts.Connect == "" {
		ip = mx.Addrs[0].String()
	}
	battery := relaytest.Battery(a.domain, ip)
	var accepted, routed []string
	tried, refused := 0, 0
	reopen := func() error {
		c.conn.Close()
		nc, code, _, err := a.dialSMTP(ctx, addr)
		if err != nil {
			return err
		}
		c = nc
		if code != 220 {
			return fmt.Errorf("greeting %d", code)
		}
		if _, err := c.ehlo(a.opts.HeloName); err != nil {
			return err
		}
		if useTLS {
			if _, err := c.startTLS(mx.Name); err != nil {
				return err
			}
		}
		return nil
	}
	for _, at := range battery {
		if ctx.Err() != nil {
			break
		}
		var rcptCode int
		var rcptMsg string
		for attempt := 0; attempt < 2; attempt++ {
			var err error
			rcptCode, rcptMsg, err = tryRelay(c, at)
			if err == nil {
				break
			}
			rcptCode = -1
			if err := reopen(); err != nil {
				s.warn("relay", "", "relay battery stopped after %d attempts: reconnect failed: %v", tried, err)
				return c
			}
		}
		if rcptCode == -1 {
			continue
		}
		tried++
		if rcptCode >= 200 && rcptCode < 300 {
			line := fmt.Sprintf("%s (RCPT TO:<%s> answered %d %s)", at.Note, at.Rcpt, rcptCode, oneLine(rcptMsg))
			// An unqualified recipient gets the MTA's default domain, most often our own: a routing case too.
			if d := rcptDomain(at.Rcpt); d == a.domain || d == "" {
				routed = append(routed, line)
			} else {
				accepted = append(accepted, line)
			}
		} else {
			refused++
		}
	}
	from := ""
	if la, ok := c.conn.LocalAddr().(*net.TCPAddr); ok && la.IP.IsLoopback() {
		// From the MTA's own host the audit may be a trusted client (mynetworks); it still reports a FAIL,
		// and says so.
		from = " (tried from the loopback address, which the MTA may trust: run the audit from outside to be sure)"
	}
	switch {
	case len(accepted) > 0:
		s.fail("relay", "refuse mail for other domains from unauthenticated clients (Postfix: smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination; moat: [checks.relay])",
			"open relay: %d of %d forms for another domain accepted%s: %s", len(accepted), tried, from, strings.Join(accepted, "; "))
	case len(routed) > 0:
		// Addressed to our own domain, these relay only if the MTA then routes them on; without DATA the
		// audit cannot tell, so it warns.
		s.warn("relay", "refuse routing forms at RCPT: moat's [checks.relay] does by default (allow_percent_hack, allow_bang_paths, allow_quoted_routing = false)",
			"%d of %d routing forms (percent hack, bang path, quoted) for %s accepted at RCPT%s: they relay if the MTA routes them on: %s",
			len(routed), tried, a.domain, from, strings.Join(routed, "; "))
	case tried > 0:
		s.pass("relay", "all %d relay forms refused at RCPT", refused)
	}
	return c
}

// rcptDomain is the domain after the last '@' of a battery recipient, in comparison form ("" without one).
func rcptDomain(rcpt string) string {
	i := strings.LastIndexByte(rcpt, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimRight(rcpt[i+1:], "."))
}

// tryRelay sends one attempt's EHLO, MAIL and RCPT, then RSET; it returns the RCPT reply (0 when MAIL was
// refused, which refuses the attempt as well). An error means the connection is gone.
func tryRelay(c *smtpConn, at relaytest.Attempt) (int, string, error) {
	if _, err := c.ehlo(at.Helo); err != nil {
		return 0, "", err
	}
	code, msg, err := c.cmd("MAIL FROM:<" + at.From + ">")
	if err != nil {
		return 0, "", err
	}
	if code == 421 {
		return 0, "", errors.New(msg)
	}
	rc, rm := 0, msg
	if code >= 200 && code < 300 {
		rc, rm, err = c.cmd("RCPT TO:<" + at.Rcpt + ">")
		if err != nil {
			return 0, "", err
		}
		if rc == 421 {
			return 0, "", errors.New(rm)
		}
	}
	if _, _, err := c.cmd("RSET"); err != nil {
		// The reply decided; a connection closed after it is reopened for the next attempt.
		return rc, rm, nil
	}
	return rc, rm, nil
}
