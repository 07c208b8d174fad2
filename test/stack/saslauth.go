package stack

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// SASLPassword is the password StartSASLAuth accepts for every user.
const SASLPassword = "secret"

// StartSASLAuth serves the Dovecot authentication protocol (version 1.2, the client side of which Postfix
// implements for smtpd_sasl_type = dovecot) on a loopback port and returns its address, so that Postfix can
// offer SMTP AUTH without a Dovecot installation. It accepts PLAIN with SASLPassword for any user. It stands in
// for the SASL backend only: Postfix itself does the SMTP AUTH dialog and passes {auth_authen} to the milter.
// Use it with ExtraMain "smtpd_sasl_auth_enable" = "yes", "smtpd_sasl_type" = "dovecot" and
// "smtpd_sasl_path" = "inet:"+addr.
func StartSASLAuth(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("stack: sasl: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveDovecotAuth(c)
		}
	}()
	return ln.Addr().String()
}

func serveDovecotAuth(c net.Conn) {
	defer c.Close()
	fmt.Fprintf(c, "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t%d\nCUID\t1\nCOOKIE\t%032x\nDONE\n", os.Getpid(), 1)
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if f[0] != "AUTH" || len(f) < 3 {
			continue
		}
		id, resp := f[1], ""
		for _, p := range f[3:] {
			if v, ok := strings.CutPrefix(p, "resp="); ok {
				resp = v
			}
		}
		if resp == "" {
			// PLAIN without an initial response: ask for it.
			fmt.Fprintf(c, "CONT\t%s\t\n", id)
			if !sc.Scan() {
				return
			}
			g := strings.Split(sc.Text(), "\t")
			if len(g) >= 3 {
				resp = g[2]
			}
		}
		raw, err := base64.StdEncoding.DecodeString(resp)
		parts := strings.Split(string(raw), "\x00")
		if err != nil || len(parts) != 3 || parts[2] != SASLPassword {
			fmt.Fprintf(c, "FAIL\t%s\treason=bad credentials\n", id)
			continue
		}
		fmt.Fprintf(c, "OK\t%s\tuser=%s\n", id, parts[1])
	}
}
