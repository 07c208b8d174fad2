package envelope

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// sendOpts is one SMTP transaction as the test client plays it.
type sendOpts struct {
	LocalIP  string // source address on loopback ("127.0.0.2"); "" for the default
	Helo     string
	StartTLS bool
	AuthUser string // AUTH PLAIN with AuthUser / authPassword
	From     string
	Rcpts    []string
	Msg      []byte // sent when at least one recipient was accepted; nil: a default message
}

// reply is one SMTP reply.
type reply struct {
	Code int
	Msg  string // enhanced code and text, lines joined by "\n"
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.Code, r.Msg) }

// sendResult is what the client saw.
type sendResult struct {
	Stage  string // where the transaction ended: "CONNECT", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA" (accepted: "DONE")
	Reply  reply  // the reply that ended it (MAIL refusal, DATA answer)
	Rcpts  []reply
	Queued bool // DATA accepted
}

func (r sendResult) String() string {
	return fmt.Sprintf("stage=%s reply=%v rcpts=%v queued=%v", r.Stage, r.Reply, r.Rcpts, r.Queued)
}

const authPassword = stack.SASLPassword

func toReply(err error) reply {
	var te *textproto.Error
	if errors.As(err, &te) {
		return reply{Code: te.Code, Msg: te.Msg}
	}
	return reply{Msg: err.Error()}
}

// send plays one transaction against the MTA at addr with net/smtp. Recipients are sent one by one; DATA
// follows when any was accepted.
func send(t *testing.T, addr string, o sendOpts) sendResult {
	t.Helper()
	var res sendResult
	d := net.Dialer{Timeout: 10 * time.Second}
	if o.LocalIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.LocalIP)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	// "localhost" lets net/smtp offer PLAIN without TLS, which the tests need to show it refused.
	c, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		conn.Close()
		res.Stage, res.Reply = "CONNECT", toReply(err)
		return res
	}
	defer c.Close()
	helo := o.Helo
	if helo == "" {
		helo = "client.example"
	}
	if err := c.Hello(helo); err != nil {
		res.Stage, res.Reply = "CONNECT", toReply(err)
		return res
	}
	if o.StartTLS {
		if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "mail.moat.test"}); err != nil {
			res.Stage, res.Reply = "STARTTLS", toReply(err)
			return res
		}
	}
	if o.AuthUser != "" {
		if err := c.Auth(smtp.PlainAuth("", o.AuthUser, authPassword, "localhost")); err != nil {
			res.Stage, res.Reply = "AUTH", toReply(err)
			return res
		}
	}
	if err := c.Mail(o.From); err != nil {
		res.Stage, res.Reply = "MAIL", toReply(err)
		return res
	}
	accepted := 0
	for _, r := range o.Rcpts {
		if err := c.Rcpt(r); err != nil {
			res.Rcpts = append(res.Rcpts, toReply(err))
			continue
		}
		res.Rcpts = append(res.Rcpts, reply{Code: 250})
		accepted++
	}
	if accepted == 0 {
		res.Stage = "RCPT"
		c.Quit()
		return res
	}
	w, err := c.Data()
	if err != nil {
		res.Stage, res.Reply = "DATA", toReply(err)
		return res
	}
	msg := o.Msg
	if msg == nil {
		msg = message(o.From, o.Rcpts[0], "envelope test", "hello")
	}
	if _, err := w.Write(msg); err != nil {
		res.Stage, res.Reply = "DATA", toReply(err)
		return res
	}
	if err := w.Close(); err != nil {
		res.Stage, res.Reply = "DATA", toReply(err)
		return res
	}
	res.Stage, res.Queued = "DONE", true
	c.Quit()
	return res
}

func message(from, to, subject, body string) []byte {
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@client.example>\r\n\r\n%s\r\n",
		from, to, subject, time.Now().UTC().Format(time.RFC1123Z), time.Now().UnixNano(), body))
}

// writeCert writes a self-signed certificate and key for Postfix's smtpd and returns their paths.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mail.moat.test"},
		DNSNames:     []string{"mail.moat.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
