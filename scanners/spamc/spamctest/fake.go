// Package spamctest is a fake spamd for the unit tests of the spamd client and of its users: it parses
// requests as spamd does and answers what the test says.
package spamctest

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moatmail/moat/scanners/servers"
)

// Request is what the fake spamd received.
type Request struct {
	Line    string
	Headers map[string]string
	Body    []byte // decompressed when Compress: zlib was sent
	RawLen  int
}

// Fake speaks enough SPAMC to test the client: it parses the request like spamd (exact
// "Content-length", optional zlib) and answers with respond.
type Fake struct {
	Srv     servers.Server // its address
	respond func(req Request) string
	silent  bool
	NoZlib  bool
	done    chan struct{}

	mu   sync.Mutex
	reqs []Request
}

// Start starts a fake spamd on 127.0.0.1 answering with respond; it stops when the test ends.
func Start(t *testing.T, respond func(Request) string, opts ...func(*Fake)) *Fake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Fake{Srv: servers.Server{Network: "tcp", Addr: ln.Addr().String()}, respond: respond, done: make(chan struct{})}
	for _, o := range opts {
		o(f)
	}
	t.Cleanup(func() { close(f.done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.handle(c)
		}
	}()
	return f
}

// Silent makes the fake accept connections and never answer, like a hung spamd.
func Silent(f *Fake) { f.silent = true }

// NoZlib makes the fake refuse compressed requests, like a spamd without Compress::Zlib.
func NoZlib(f *Fake) { f.NoZlib = true }

func (f *Fake) handle(c net.Conn) {
	defer c.Close()
	if f.silent {
		io.Copy(io.Discard, c)
		<-f.done // like a hung spamd: the connection stays open, nothing is answered
		return
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	req := Request{Line: strings.TrimRight(line, "\r\n"), Headers: map[string]string{}}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		name, value, _ := strings.Cut(l, ":")
		req.Headers[name] = strings.TrimSpace(value)
	}
	if cl, ok := req.Headers["Content-length"]; ok {
		n, _ := strconv.Atoi(cl)
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		req.RawLen = n
		if req.Headers["Compress"] == "zlib" {
			if f.NoZlib {
				fmt.Fprintf(c, "SPAMD/1.0 76 Bad header line: (compression not supported, Compress::Zlib not installed: x)\r\n")
				return
			}
			zr, err := zlib.NewReader(bytes.NewReader(body))
			if err != nil {
				fmt.Fprintf(c, "SPAMD/1.0 76 Bad header line: bad zlib\r\n")
				return
			}
			body, _ = io.ReadAll(zr)
		}
		req.Body = body
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	io.WriteString(c, f.respond(req))
}

// Requests returns the requests received so far.
func (f *Fake) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.reqs...)
}

// SymbolsReply answers like spamd to SYMBOLS with the given score.
func SymbolsReply(score float64, syms string) func(Request) string {
	return func(Request) string {
		spam := "False"
		if score >= 5 {
			spam = "True"
		}
		return fmt.Sprintf("SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: %s ; %.1f / 5.0\r\n\r\n%s", len(syms), spam, score, syms)
	}
}
