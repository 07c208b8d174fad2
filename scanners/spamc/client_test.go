package spamc

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/scanners/servers"
	"github.com/moatmail/moat/scanners/spamc/spamctest"
)

// The fake spamd of package spamctest, under the names these tests use.
type (
	fakeRequest = spamctest.Request
	fakeSpamd   = spamctest.Fake
)

var (
	startFakeSpamd = spamctest.Start
	silentSpamd    = spamctest.Silent
	symbolsReply   = spamctest.SymbolsReply
)

func TestClientSymbols(t *testing.T) {
	f := startFakeSpamd(t, symbolsReply(1000, "GTUBE,MISSING_DATE"))
	c := NewClient([]servers.Server{f.Srv}, ClientOptions{})
	msg := []byte("Subject: x\r\n\r\nbody\r\n")
	res, err := c.Check(context.Background(), CmdSymbols, "example.com", BytesBody(msg))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Spam || res.Score != 1000 || strings.Join(res.Symbols, ",") != "GTUBE,MISSING_DATE" {
		t.Fatalf("result %+v", res)
	}
	reqs := f.Requests()
	if len(reqs) != 1 || reqs[0].Line != "SYMBOLS SPAMC/1.5" || reqs[0].Headers["Content-length"] != strconv.Itoa(len(msg)) ||
		reqs[0].Headers["User"] != "example.com" || !bytes.Equal(reqs[0].Body, msg) {
		t.Fatalf("spamd received %+v", reqs)
	}
}

func TestClientCompress(t *testing.T) {
	f := startFakeSpamd(t, symbolsReply(0.5, "A"))
	c := NewClient([]servers.Server{f.Srv}, ClientOptions{Compress: true})
	msg := bytes.Repeat([]byte("compressible line of text\r\n"), 1000)
	if _, err := c.Check(context.Background(), CmdSymbols, "", BytesBody(msg)); err != nil {
		t.Fatal(err)
	}
	reqs := f.Requests()
	if len(reqs) != 1 || reqs[0].Headers["Compress"] != "zlib" || !bytes.Equal(reqs[0].Body, msg) || reqs[0].RawLen >= len(msg) {
		t.Fatalf("compressed request: %d requests, headers %v, raw %d bytes for %d", len(reqs), reqs[0].Headers, reqs[0].RawLen, len(msg))
	}
}

func TestClientCompressFallsBack(t *testing.T) {
	f := startFakeSpamd(t, symbolsReply(0.5, "A"), spamctest.NoZlib)
	c := NewClient([]servers.Server{f.Srv}, ClientOptions{Compress: true})
	msg := []byte("Subject: x\r\n\r\nbody\r\n")
	for i := 0; i < 2; i++ {
		if _, err := c.Check(context.Background(), CmdSymbols, "", BytesBody(msg)); err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
	}
	reqs := f.Requests()
	if len(reqs) != 2 || reqs[0].Headers["Compress"] != "" || reqs[1].Headers["Compress"] != "" {
		t.Fatalf("want two plain requests after the refusal, got %+v", reqs)
	}
}

func TestClientFailover(t *testing.T) {
	dead := servers.Server{Network: "unix", Addr: filepath.Join(t.TempDir(), "none.sock")}
	live := startFakeSpamd(t, symbolsReply(2, "X"))
	c := NewClient([]servers.Server{dead, live.Srv}, ClientOptions{})
	for i := 0; i < 3; i++ {
		res, err := c.Check(context.Background(), CmdSymbols, "", BytesBody([]byte("m")))
		if err != nil || res.Server != live.Srv {
			t.Fatalf("check %d: %v from %v", i, err, res.Server)
		}
	}
	if _, ok := c.Down()[dead.String()]; !ok {
		t.Fatalf("dead server not marked down: %v", c.Down())
	}
}

func TestClientSpamdErrorIsFinal(t *testing.T) {
	a := startFakeSpamd(t, func(fakeRequest) string { return "SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n" })
	b := startFakeSpamd(t, symbolsReply(2, "X"))
	c := NewClient([]servers.Server{a.Srv, b.Srv}, ClientOptions{})
	_, err := c.Check(context.Background(), CmdSymbols, "", BytesBody([]byte("m")))
	if !errors.Is(err, ErrSpamd) || !strings.Contains(err.Error(), "Content-Length mismatch") {
		t.Fatalf("error = %v, want spamd's own error", err)
	}
	if n := len(b.Requests()); n != 0 {
		t.Fatalf("second server got %d requests after a spamd error reply", n)
	}
}

func TestClientSilentServerHonoursDeadline(t *testing.T) {
	f := startFakeSpamd(t, nil, silentSpamd)
	c := NewClient([]servers.Server{f.Srv}, ClientOptions{})
	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	_, err := c.Check(ctx, CmdSymbols, "", BytesBody([]byte("m")))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want unavailable by deadline", err)
	}
	// Generous slack for a loaded machine, but well short of a client that waits for the server.
	if elapsed := time.Since(start); elapsed > deadline+time.Second {
		t.Fatalf("returned after %v, deadline %v", elapsed, deadline)
	}
}

// Error codes that say this spamd cannot serve now fail over to the next server; the first one is marked
// down. The others stay final (TestClientSpamdErrorIsFinal).
func TestClientServerSideErrorsFailOver(t *testing.T) {
	for _, code := range []int{69, 70, 71, 74, 75, 79} {
		name := exitNames[code]
		t.Run(name, func(t *testing.T) {
			a := startFakeSpamd(t, func(fakeRequest) string { return fmt.Sprintf("SPAMD/1.5 %d %s\r\n", code, name) })
			b := startFakeSpamd(t, symbolsReply(2, "X"))
			c := NewClient([]servers.Server{a.Srv, b.Srv}, ClientOptions{})
			res, err := c.Check(context.Background(), CmdSymbols, "", BytesBody([]byte("m")))
			if err != nil || res.Server != b.Srv || res.Score != 2 {
				t.Fatalf("got %+v, %v; want the second server's score", res, err)
			}
			if _, down := c.Down()[a.Srv.String()]; !down || len(a.Requests()) != 1 {
				t.Fatalf("down = %v, first server asked %d times", c.Down(), len(a.Requests()))
			}
		})
	}
	// Every server refusing: the error is spamd's, not "unavailable" only.
	a := startFakeSpamd(t, func(fakeRequest) string { return "SPAMD/1.5 75 EX_TEMPFAIL\r\n" })
	c := NewClient([]servers.Server{a.Srv}, ClientOptions{})
	if _, err := c.Check(context.Background(), CmdSymbols, "", BytesBody([]byte("m"))); !errors.Is(err, ErrSpamd) ||
		!errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "EX_TEMPFAIL") {
		t.Fatalf("error = %v, want spamd's EX_TEMPFAIL", err)
	}
}

// A silent first server gets its share of the deadline, not all of it, when attempt_timeout is not set.
func TestClientSilentServerFailsOver(t *testing.T) {
	quiet := startFakeSpamd(t, nil, silentSpamd)
	live := startFakeSpamd(t, symbolsReply(2, "X"))
	c := NewClient([]servers.Server{quiet.Srv, live.Srv}, ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.Check(ctx, CmdSymbols, "", BytesBody([]byte("m")))
	if err != nil || res.Server != live.Srv {
		t.Fatalf("got %+v, %v; want the live server's answer", res, err)
	}
	if _, down := c.Down()[live.Srv.String()]; down {
		t.Fatalf("the healthy server is marked down: %v", c.Down())
	}
}

// randomBody is an incompressible body of n bytes that is never held in memory as a whole.
func randomBody(n int64) Body {
	return Body{Open: func() io.Reader { return io.LimitReader(rand.New(rand.NewSource(1)), n) }, Size: n}
}

// Compression streams: learning a large file with compress = true does not hold the compressed copy in
// memory. The fake server inflates and counts without keeping the body.
func TestClientCompressStreamsLargeBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		n := int64(-1)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if l = strings.TrimRight(l, "\r\n"); l == "" {
				break
			}
			if v, ok := strings.CutPrefix(l, "Content-length: "); ok {
				n, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		zr, err := zlib.NewReader(io.LimitReader(r, n))
		if err != nil {
			return
		}
		plain, _ := io.Copy(io.Discard, zr)
		if rest, _ := io.Copy(io.Discard, r); rest != 0 {
			plain = -rest // more bytes than announced
		}
		got <- plain
		io.WriteString(conn, "SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n")
	}()
	const size = 8 << 20
	c := NewClient([]servers.Server{{Network: "tcp", Addr: ln.Addr().String()}}, ClientOptions{Compress: true})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	changed, err := c.Tell(context.Background(), Spam, "", randomBody(size))
	runtime.ReadMemStats(&after)
	if err != nil || !changed {
		t.Fatalf("Tell = %v, %v", changed, err)
	}
	if n := <-got; n != size {
		t.Fatalf("spamd inflated %d bytes, want %d", n, size)
	}
	// A buffered compressed copy of incompressible data alone is more than size bytes.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d bytes sent compressed: %d bytes allocated", size, alloc)
	if alloc > size/2 {
		t.Fatalf("sending %d bytes compressed allocated %d bytes: the body is buffered", size, alloc)
	}
}

func TestClientRejectsMalformedReply(t *testing.T) {
	f := startFakeSpamd(t, func(fakeRequest) string {
		return "SPAMD/1.1 0 EX_OK\r\nContent-length: 99\r\nSpam: True ; 5.0 / 5.0\r\n\r\nX"
	})
	c := NewClient([]servers.Server{f.Srv}, ClientOptions{})
	if _, err := c.Check(context.Background(), CmdSymbols, "", BytesBody([]byte("m"))); !errors.Is(err, ErrProtocol) {
		t.Fatalf("error = %v, want ErrProtocol", err)
	}
	g := startFakeSpamd(t, func(fakeRequest) string { return "SPAMD/1.1 0 EX_OK\r\nContent-length: 1\r\n\r\nX" })
	c = NewClient([]servers.Server{g.Srv}, ClientOptions{})
	if _, err := c.Check(context.Background(), CmdSymbols, "", BytesBody([]byte("m"))); !errors.Is(err, ErrProtocol) {
		t.Fatalf("reply without Spam header: error = %v, want ErrProtocol", err)
	}
}

func TestClientTell(t *testing.T) {
	f := startFakeSpamd(t, func(r fakeRequest) string {
		switch {
		case r.Headers["Set"] == "local":
			return "SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n\r\n"
		case r.Headers["Remove"] == "local":
			return "SPAMD/1.1 0 EX_OK\r\nDidRemove: local\r\n\r\n\r\n"
		}
		return "SPAMD/1.1 0 EX_OK\r\n\r\n\r\n"
	})
	c := NewClient([]servers.Server{f.Srv}, ClientOptions{})
	for _, cl := range []Class{Spam, Ham, Forget} {
		changed, err := c.Tell(context.Background(), cl, "", BytesBody([]byte("Subject: x\r\n\r\nb\r\n")))
		if err != nil || !changed {
			t.Fatalf("Tell(%s) = %v, %v", cl, changed, err)
		}
	}
	reqs := f.Requests()
	if reqs[0].Headers["Message-class"] != "spam" || reqs[1].Headers["Message-class"] != "ham" || reqs[2].Headers["Remove"] != "local" {
		t.Fatalf("requests: %+v", reqs)
	}
	if _, err := c.Tell(context.Background(), Class("eggs"), "", BytesBody(nil)); err == nil {
		t.Fatal("Tell accepted an unknown class")
	}
}
