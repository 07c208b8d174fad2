package clamd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatmail/moat/scanners/servers"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Result
		wantErr error
		errText string
	}{
		{"ok", "stream: OK", Result{}, nil, ""},
		{"ok with NUL", "stream: OK\x00", Result{}, nil, ""},
		{"found", "stream: Eicar-Test-Signature FOUND", Result{Infected: true, Virus: "Eicar-Test-Signature"}, nil, ""},
		{"found unofficial", "stream: Eicar-Test-File.UNOFFICIAL FOUND\n", Result{Infected: true, Virus: "Eicar-Test-File.UNOFFICIAL"}, nil, ""},
		{"session prefix", "12: stream: OK", Result{}, nil, ""},
		{"size limit", "INSTREAM size limit exceeded. ERROR", Result{}, ErrClamd, "INSTREAM size limit exceeded."},
		{"stream error", "stream: Can't allocate memory ERROR", Result{}, ErrClamd, "Can't allocate memory"},
		{"bare error", "ERROR", Result{}, ErrClamd, "unspecified error"},
		{"empty", "", Result{}, ErrProtocol, ""},
		{"garbage", "hello", Result{}, ErrProtocol, ""},
		{"found without name", "stream:  FOUND", Result{}, ErrProtocol, ""},
		{"control in name", "stream: a\x01b FOUND", Result{}, ErrProtocol, ""},
		{"unknown word", "stream: MAYBE", Result{}, ErrProtocol, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseReply(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ParseReply(%q) error = %v, want %v", tc.in, err, tc.wantErr)
				}
				if tc.errText != "" && !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("error %q does not keep clamd's text %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseReply(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseReply(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"stream: OK", "stream: X FOUND", "INSTREAM size limit exceeded. ERROR", "1: stream: OK", "", "stream: ", "stream: \xff FOUND", "PONG"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		res, err := ParseReply(s)
		if err != nil {
			if !errors.Is(err, ErrClamd) && !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v wraps neither ErrClamd nor ErrProtocol", err)
			}
			if res != (Result{}) {
				t.Fatalf("result %+v with error", res)
			}
			return
		}
		if res.Infected && (res.Virus == "" || !isPrintable(res.Virus)) {
			t.Fatalf("infected with bad name %q", res.Virus)
		}
		if !res.Infected && res.Virus != "" {
			t.Fatalf("clean with a name %q", res.Virus)
		}
	})
}

// fakeClamd is a unix-socket server speaking INSTREAM with a scripted behaviour: it records what it received
// and answers with reply (or never answers when silent).
type fakeClamd struct {
	srv    servers.Server
	ln     net.Listener
	reply  string
	silent bool
	limit  int // close after this many payload bytes with the size-limit error (0: none)

	mu       sync.Mutex
	received [][]byte
	conns    int
}

func startFake(t *testing.T, reply string, opts ...func(*fakeClamd)) *fakeClamd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clamd.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeClamd{srv: servers.Server{Network: "unix", Addr: path}, ln: ln, reply: reply}
	for _, o := range opts {
		o(f)
	}
	t.Cleanup(func() { ln.Close() })
	go f.serve()
	return f
}

func silentFake(f *fakeClamd) { f.silent = true }

func (f *fakeClamd) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns++
		f.mu.Unlock()
		go f.handle(c)
	}
}

func (f *fakeClamd) handle(c net.Conn) {
	defer c.Close()
	if f.silent {
		_, _ = io.Copy(io.Discard, c) // accept everything, answer nothing
		return
	}
	cmd := make([]byte, 10)
	if _, err := io.ReadFull(c, cmd[:6]); err != nil {
		return
	}
	if string(cmd[:6]) == "zPING\x00" {
		c.Write([]byte("PONG\x00"))
		return
	}
	if _, err := io.ReadFull(c, cmd[6:]); err != nil || string(cmd) != "zINSTREAM\x00" {
		c.Write([]byte("UNKNOWN COMMAND\x00"))
		return
	}
	var got bytes.Buffer
	for {
		var n uint32
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		if n == 0 {
			break
		}
		if _, err := io.CopyN(&got, c, int64(n)); err != nil {
			return
		}
		if f.limit > 0 && got.Len() > f.limit {
			c.Write([]byte("INSTREAM size limit exceeded. ERROR\x00"))
			return
		}
	}
	f.mu.Lock()
	f.received = append(f.received, got.Bytes())
	f.mu.Unlock()
	c.Write([]byte(f.reply + "\x00"))
}

func TestInstreamSendsChunks(t *testing.T) {
	f := startFake(t, "stream: OK")
	msg := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 000 bytes: several chunks
	res, err := Instream(context.Background(), f.srv, time.Second, bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if res.Infected {
		t.Fatalf("clean message reported infected: %+v", res)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.received) != 1 || !bytes.Equal(f.received[0], msg) {
		t.Fatalf("server received %d streams; first has %d bytes, want the %d-byte message", len(f.received), len(f.received[0]), len(msg))
	}
}

func TestInstreamFound(t *testing.T) {
	f := startFake(t, "stream: Win.Test.EICAR_HDB-1 FOUND")
	res, err := Instream(context.Background(), f.srv, time.Second, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Infected || res.Virus != "Win.Test.EICAR_HDB-1" {
		t.Fatalf("got %+v", res)
	}
}

func TestInstreamKeepsSizeLimitText(t *testing.T) {
	f := startFake(t, "stream: OK", func(f *fakeClamd) { f.limit = 100 << 10 })
	_, err := Instream(context.Background(), f.srv, time.Second, bytes.NewReader(make([]byte, 8<<20)))
	if !errors.Is(err, ErrClamd) || !strings.Contains(err.Error(), "size limit exceeded") {
		t.Fatalf("error = %v, want clamd's size limit text", err)
	}
	if !errors.Is(err, ErrSizeLimit) {
		t.Fatalf("error = %v, want ErrSizeLimit", err)
	}
	if _, err := ParseReply("stream: Can't allocate memory ERROR"); !errors.Is(err, ErrClamd) || errors.Is(err, ErrSizeLimit) {
		t.Fatalf("other clamd error = %v, want ErrClamd only", err)
	}
}

// A clamd that accepts the connection and never answers must not hold the scan past the context's deadline.
func TestInstreamSilentServerHonoursDeadline(t *testing.T) {
	f := startFake(t, "", silentFake)
	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	_, err := Instream(ctx, f.srv, time.Second, strings.NewReader("hello"))
	elapsed := time.Since(start)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want unavailable after the deadline", err)
	}
	// Not a speed test: the slack is generous for a loaded machine, but a client that waits for the server
	// (or for its own fixed timeouts of a second or more) fails it.
	if elapsed > deadline+time.Second {
		t.Fatalf("scan returned after %v, deadline was %v", elapsed, deadline)
	}
}

func TestInstreamUnreachable(t *testing.T) {
	srv := servers.Server{Network: "unix", Addr: filepath.Join(t.TempDir(), "missing.sock")}
	_, err := Instream(context.Background(), srv, time.Second, strings.NewReader("x"))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("error = %v, want ErrUnavailable", err)
	}
}

func TestPing(t *testing.T) {
	f := startFake(t, "stream: OK")
	if err := Ping(context.Background(), f.srv, time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestPoolFailover(t *testing.T) {
	dead := servers.Server{Network: "unix", Addr: filepath.Join(t.TempDir(), "dead.sock")}
	live := startFake(t, "stream: X FOUND")
	p := NewPool([]servers.Server{dead, live.srv}, PoolOptions{ConnectTimeout: time.Second})
	defer p.Close()
	for i := 0; i < 4; i++ {
		res, srv, err := p.Scan(context.Background(), func() io.Reader { return strings.NewReader("m") })
		if err != nil {
			t.Fatalf("scan %d: %v", i, err)
		}
		if srv != live.srv || res.Virus != "X" {
			t.Fatalf("scan %d answered by %v with %+v", i, srv, res)
		}
	}
	if _, ok := p.Down()[dead.String()]; !ok {
		t.Fatalf("dead server not marked down: %v", p.Down())
	}
}

func TestPoolClamdErrorIsFinal(t *testing.T) {
	a := startFake(t, "stream: Can't allocate memory ERROR")
	b := startFake(t, "stream: OK")
	p := NewPool([]servers.Server{a.srv, b.srv}, PoolOptions{ConnectTimeout: time.Second})
	defer p.Close()
	_, _, err := p.Scan(context.Background(), func() io.Reader { return strings.NewReader("m") })
	if !errors.Is(err, ErrClamd) {
		t.Fatalf("error = %v, want clamd's error", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns != 0 {
		t.Fatalf("second server was tried after a clamd error reply")
	}
}

func TestPoolAttemptTimeoutFailsOverFromSilentServer(t *testing.T) {
	silent := startFake(t, "", silentFake)
	live := startFake(t, "stream: OK")
	p := NewPool([]servers.Server{silent.srv, live.srv}, PoolOptions{ConnectTimeout: time.Second, AttemptTimeout: 200 * time.Millisecond})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, srv, err := p.Scan(ctx, func() io.Reader { return strings.NewReader("m") })
	if err != nil || srv != live.srv {
		t.Fatalf("scan: %v by %v, want the live server", err, srv)
	}
}

// Without attempt_timeout, a silent first server gets its share of the deadline, not all of it: the scan
// fails over to the live server, which is not marked down, and returns well before the deadline.
func TestPoolSilentServerFailsOverByDefault(t *testing.T) {
	silent := startFake(t, "", silentFake)
	live := startFake(t, "stream: OK")
	p := NewPool([]servers.Server{silent.srv, live.srv}, PoolOptions{ConnectTimeout: time.Second})
	defer p.Close()
	const deadline = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_, srv, err := p.Scan(ctx, func() io.Reader { return strings.NewReader("m") })
	if err != nil || srv != live.srv {
		t.Fatalf("scan: %v by %v, want the live server", err, srv)
	}
	down := p.Down()
	if _, ok := down[silent.srv.String()]; !ok || len(down) != 1 {
		t.Fatalf("down = %v, want only the silent server", down)
	}
}

func TestPoolHealthCheckRevives(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.sock")
	srv := servers.Server{Network: "unix", Addr: path}
	p := NewPool([]servers.Server{srv}, PoolOptions{ConnectTimeout: time.Second, HealthInterval: 20 * time.Millisecond})
	defer p.Close()
	if _, _, err := p.Scan(context.Background(), func() io.Reader { return strings.NewReader("m") }); err == nil {
		t.Fatal("scan against a missing socket succeeded")
	}
	if len(p.Down()) != 1 {
		t.Fatalf("server not down: %v", p.Down())
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeClamd{srv: srv, ln: ln, reply: "stream: OK"}
	defer ln.Close()
	go f.serve()
	deadline := time.Now().Add(10 * time.Second)
	for len(p.Down()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("health check never marked the server up again")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
