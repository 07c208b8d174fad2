package stack

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SMTPReply is one SMTP reply.
type SMTPReply struct {
	Rcpt string // the recipient, for RCPT replies
	Code int
	Text string // full text including the enhanced status code; lines joined by "\n"
}

// SMTPResult is the outcome of SendMail.
type SMTPResult struct {
	// Code and Text are those of the first failing command, or of the reply
	// to the end of DATA (250) on success. Code is 0 when the connection
	// failed or broke (Text then holds the error).
	Code int
	Text string
	// Stage names the command that gave Code: "CONNECT", "HELO", "MAIL",
	// "RCPT" or "DATA" ("DATA" also on success).
	Stage string
	// RcptReplies holds the reply to each RCPT TO sent, in order.
	RcptReplies []SMTPReply
	// Accepted is true when the message was accepted at the end of DATA.
	Accepted bool
}

// OK reports whether the message was accepted.
func (r SMTPResult) OK() bool { return r.Accepted }

func (r SMTPResult) String() string {
	return fmt.Sprintf("%s %d %s", r.Stage, r.Code, r.Text)
}

// SMTPTimeout bounds one whole SendMail session.
var SMTPTimeout = 2 * time.Minute

// SendMail sends one message over SMTP (EHLO, falling back to HELO) and stops
// at the first failing command, whose code and text it returns; on success it
// returns the 250 given at the end of DATA. Bare LF line ends in msg are sent
// as CRLF and lines starting with "." are dot-stuffed. It does not fail the
// test by itself: assert on the result.
func SendMail(t testing.TB, addr, helo, from string, to []string, msg []byte) SMTPResult {
	t.Helper()
	return sendMail(t, addr, helo, from, to, msg, false)
}

// SendMailEach is SendMail that sends every RCPT TO even when some are
// refused, records each reply in RcptReplies, and goes on to DATA when at
// least one recipient was accepted. When every recipient was refused, Code,
// Text and Stage are those of the first refusal.
func SendMailEach(t testing.TB, addr, helo, from string, to []string, msg []byte) SMTPResult {
	t.Helper()
	return sendMail(t, addr, helo, from, to, msg, true)
}

type smtpConn struct {
	c net.Conn
	r *bufio.Reader
}

func (s *smtpConn) reply() (int, string, error) {
	var lines []string
	code := 0
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if len(lines) > 0 {
				return code, strings.Join(lines, "\n"), err
			}
			return 0, strings.TrimRight(line, "\r\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, line, fmt.Errorf("malformed reply %q", line)
		}
		c, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, line, fmt.Errorf("malformed reply %q", line)
		}
		code = c
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		lines = append(lines, text)
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(lines, "\n"), nil
		}
	}
}

func (s *smtpConn) cmd(format string, args ...any) (int, string, error) {
	if _, err := fmt.Fprintf(s.c, format+"\r\n", args...); err != nil {
		return 0, err.Error(), err
	}
	return s.reply()
}

func sendMail(t testing.TB, addr, helo, from string, to []string, msg []byte, each bool) (res SMTPResult) {
	t.Helper()
	fail := func(stage string, code int, text string, err error) SMTPResult {
		res.Stage, res.Code, res.Text = stage, code, text
		if err != nil && code == 0 {
			res.Text = strings.TrimSpace(text + " " + err.Error())
		}
		return res
	}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return fail("CONNECT", 0, "", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(SMTPTimeout))
	s := &smtpConn{c: c, r: bufio.NewReader(c)}
	code, text, err := s.reply()
	if err != nil || code != 220 {
		return fail("CONNECT", code, text, err)
	}
	defer func() {
		// Say goodbye after a refusal, as real clients do (not after 421).
		if !res.Accepted && res.Code != 421 && res.Code != 0 {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			s.cmd("QUIT")
		}
	}()
	code, text, err = s.cmd("EHLO %s", helo)
	if err == nil && code/100 == 5 && code != 421 {
		code, text, err = s.cmd("HELO %s", helo)
	}
	if err != nil || code != 250 {
		return fail("HELO", code, text, err)
	}
	code, text, err = s.cmd("MAIL FROM:<%s>", from)
	if err != nil || code != 250 {
		return fail("MAIL", code, text, err)
	}
	accepted := 0
	var first *SMTPReply
	for _, rc := range to {
		code, text, err = s.cmd("RCPT TO:<%s>", rc)
		rep := SMTPReply{Rcpt: rc, Code: code, Text: text}
		res.RcptReplies = append(res.RcptReplies, rep)
		if err != nil {
			return fail("RCPT", code, text, err)
		}
		if code/100 == 2 {
			accepted++
			continue
		}
		if !each {
			return fail("RCPT", code, text, nil)
		}
		if first == nil {
			first = &rep
		}
	}
	if accepted == 0 {
		if first != nil {
			return fail("RCPT", first.Code, first.Text, nil)
		}
		return fail("RCPT", 0, "no recipients", nil)
	}
	code, text, err = s.cmd("DATA")
	if err != nil || code != 354 {
		return fail("DATA", code, text, err)
	}
	if _, err := c.Write(dotStuff(msg)); err != nil {
		return fail("DATA", 0, "", err)
	}
	code, text, err = s.reply()
	if err != nil || code/100 != 2 {
		return fail("DATA", code, text, err)
	}
	res.Stage, res.Code, res.Text, res.Accepted = "DATA", code, text, true
	s.cmd("QUIT")
	return res
}

// dotStuff converts line ends to CRLF, dot-stuffs and appends the final ".".
func dotStuff(msg []byte) []byte {
	var b bytes.Buffer
	lines := bytes.Split(msg, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	for _, l := range lines {
		l = bytes.TrimSuffix(l, []byte("\r"))
		if len(l) > 0 && l[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(l)
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// Message builds a small RFC 5322 message with the given headers and body.
func Message(from, to, subject, body string) []byte {
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@moat.test>\r\n\r\n%s\r\n",
		from, to, subject, time.Now().UTC().Format(time.RFC1123Z), time.Now().UnixNano(), body))
}
