package servers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Server
		err  bool
	}{
		{"unix:/run/clamd.sock", Server{"unix", "/run/clamd.sock"}, false},
		{"/run/clamd.sock", Server{"unix", "/run/clamd.sock"}, false},
		{"tcp:127.0.0.1:3310", Server{"tcp", "127.0.0.1:3310"}, false},
		{"inet:127.0.0.1:3310", Server{"tcp", "127.0.0.1:3310"}, false},
		{"127.0.0.1:3310", Server{"tcp", "127.0.0.1:3310"}, false},
		{"unix:", Server{}, true},
		{"tcp:nohost", Server{}, true},
		{"clamd", Server{}, true},
		{"tcp:[::1]:783", Server{"tcp", "[::1]:783"}, false},
		{"tcp:127.0.0.1:99999", Server{}, true},
		{"tcp:127.0.0.1:65536", Server{}, true},
		{"tcp:127.0.0.1:0", Server{}, true},
		{"tcp:127.0.0.1:-1", Server{}, true},
		{"tcp:127.0.0.1:+783", Server{}, true},
		{"tcp:127.0.0.1:0783", Server{}, true},
		{"tcp:127.0.0.1:spamd", Server{}, true},
		{"tcp::783", Server{}, true},
		{"tcp:localhost:65535", Server{"tcp", "localhost:65535"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("Parse(%q) error = %v, want error %v", tc.in, err, tc.err)
			}
			if got != tc.want {
				t.Fatalf("Parse(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

var errDown = errors.New("test: server unavailable")

func TestTryFailsOverAndMarksDown(t *testing.T) {
	a, b := Server{Network: "tcp", Addr: "a:1"}, Server{Network: "tcp", Addr: "b:1"}
	p := NewPool([]Server{a, b}, Options{Unavailable: errDown})
	var tried []Server
	attempt := func(_ context.Context, srv Server) (string, error) {
		tried = append(tried, srv)
		if srv == a {
			return "", fmt.Errorf("%w: %s: refused", errDown, srv)
		}
		return "ok from " + srv.Addr, nil
	}
	for i := 0; i < 3; i++ {
		tried = nil
		v, srv, err := Try(context.Background(), p, attempt)
		if err != nil || srv != b || v != "ok from b:1" {
			t.Fatalf("try %d: %q from %v, %v", i, v, srv, err)
		}
		if i > 0 && tried[0] != b {
			t.Fatalf("try %d: the down server was tried first: %v", i, tried)
		}
	}
	if _, ok := p.Down()[a.String()]; !ok || len(p.Down()) != 1 {
		t.Fatalf("down = %v, want only %s", p.Down(), a)
	}
	p.MarkUp(a)
	if len(p.DownServers()) != 0 {
		t.Fatalf("down after MarkUp: %v", p.DownServers())
	}
}

func TestTryFinalErrorStops(t *testing.T) {
	final := errors.New("test: refused by the server itself")
	p := NewPool([]Server{{Network: "tcp", Addr: "a:1"}, {Network: "tcp", Addr: "b:1"}}, Options{Unavailable: errDown})
	n := 0
	v, _, err := Try(context.Background(), p, func(context.Context, Server) (int, error) { n++; return 7, final })
	if !errors.Is(err, final) || v != 7 || n != 1 {
		t.Fatalf("Try = %d, %v after %d attempts; want 7, the final error, 1 attempt", v, err, n)
	}
	if len(p.Down()) != 0 {
		t.Fatalf("a final error marked a server down: %v", p.Down())
	}
}

func TestTryAllDownAndRetryAfter(t *testing.T) {
	srv := Server{Network: "unix", Addr: "/none"}
	p := NewPool([]Server{srv}, Options{Unavailable: errDown, RetryAfter: 50 * time.Millisecond})
	v, got, err := Try(context.Background(), p, func(context.Context, Server) (int, error) { return 7, errDown })
	if !errors.Is(err, errDown) || v != 0 || got != (Server{}) {
		t.Fatalf("Try = %d, %v, %v; want the zero value and an unavailable error", v, got, err)
	}
	if len(p.Down()) != 1 {
		t.Fatalf("server not down: %v", p.Down())
	}
	time.Sleep(60 * time.Millisecond)
	if len(p.Down()) != 0 {
		t.Fatalf("server still down after RetryAfter: %v", p.Down())
	}
	if _, _, err := Try(context.Background(), NewPool(nil, Options{Unavailable: errDown}), func(context.Context, Server) (int, error) {
		return 0, nil
	}); !errors.Is(err, errDown) {
		t.Fatalf("empty pool: %v", err)
	}
}

func TestTryAttemptTimeout(t *testing.T) {
	p := NewPool([]Server{{Network: "tcp", Addr: "a:1"}}, Options{Unavailable: errDown, AttemptTimeout: 20 * time.Millisecond})
	_, _, err := Try(context.Background(), p, func(ctx context.Context, _ Server) (int, error) {
		<-ctx.Done()
		return 0, fmt.Errorf("%w: %w", errDown, ctx.Err())
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the attempt's deadline", err)
	}
}

// silent is an attempt on a server that accepts the request and never answers: it returns when its
// context ends, with the unavailable error as the clients do.
func silent(ctx context.Context, _ Server) (string, error) {
	<-ctx.Done()
	return "", fmt.Errorf("%w: %w", errDown, ctx.Err())
}

// Without attempt_timeout, a silent first server must not use up the caller's whole deadline: the next one
// gets its share, answers, and is not marked down.
func TestTryDefaultAttemptShare(t *testing.T) {
	quiet, ok := Server{Network: "unix", Addr: "/silent.sock"}, Server{Network: "unix", Addr: "/ok.sock"}
	p := NewPool([]Server{quiet, ok}, Options{Unavailable: errDown})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, srv, err := Try(ctx, p, func(ctx context.Context, srv Server) (string, error) {
		if srv == quiet {
			return silent(ctx, srv)
		}
		return "scanned", nil
	})
	if err != nil || srv != ok || v != "scanned" {
		t.Fatalf("Try = %q from %v, %v; want the healthy server's answer", v, srv, err)
	}
	if _, isDown := p.Down()[quiet.String()]; !isDown || len(p.Down()) != 1 {
		t.Fatalf("down = %v, want only the silent server", p.Down())
	}
}

// A server marked down does not take a share from the servers that are up: the only server up gets the
// whole deadline.
func TestTryDownServerTakesNoShare(t *testing.T) {
	bad, good := Server{Network: "unix", Addr: "/bad.sock"}, Server{Network: "unix", Addr: "/good.sock"}
	p := NewPool([]Server{bad, good}, Options{Unavailable: errDown})
	p.markDown(p.members[0], errDown)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want, _ := ctx.Deadline()
	var got time.Time
	_, srv, err := Try(ctx, p, func(ctx context.Context, srv Server) (string, error) {
		got, _ = ctx.Deadline()
		return "ok", nil
	})
	if err != nil || srv != good || !got.Equal(want) {
		t.Fatalf("Try by %v, %v: attempt deadline %v, want the caller's %v", srv, err, got, want)
	}
}

func TestAttemptTimeoutShare(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if got := attemptTimeout(ctx, 0, 2); got <= 3*time.Second || got > 4*time.Second {
		t.Errorf("two servers left of 8s: %v, want about 4s", got)
	}
	if got := attemptTimeout(ctx, 0, 1); got != 0 {
		t.Errorf("last server: %v, want 0 (all the time left)", got)
	}
	if got := attemptTimeout(ctx, time.Second, 3); got != time.Second {
		t.Errorf("configured: %v, want 1s", got)
	}
	if got := attemptTimeout(context.Background(), 0, 3); got != 0 {
		t.Errorf("no deadline: %v, want 0", got)
	}
}

// A server cut off by the caller's deadline is not marked down: the deadline says nothing about it.
func TestTryCallerDeadlineDoesNotMarkDown(t *testing.T) {
	a, b := Server{Network: "unix", Addr: "/a.sock"}, Server{Network: "unix", Addr: "/b.sock"}
	single := NewPool([]Server{a}, Options{Unavailable: errDown})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := Try(ctx, single, silent); !errors.Is(err, errDown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want unavailable after the deadline", err)
	}
	if len(single.Down()) != 0 {
		t.Fatalf("the caller's deadline marked the server down: %v", single.Down())
	}
	// Two silent servers: the first used up its own share (down), the second was cut off by the caller (up).
	pair := NewPool([]Server{a, b}, Options{Unavailable: errDown})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, _, err := Try(ctx2, pair, silent); !errors.Is(err, errDown) {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if _, isDown := pair.Down()[a.String()]; !isDown || len(pair.Down()) != 1 {
		t.Fatalf("down = %v, want only %s", pair.Down(), a)
	}
}

func TestPrintable(t *testing.T) {
	if got := Printable("Eicar\x00\r\nSig\xff"); got != "Eicar???Sig?" {
		t.Errorf("Printable = %q", got)
	}
	if got := Printable(strings.Repeat("x", 300)); len(got) != 200 {
		t.Errorf("Printable kept %d bytes, want 200", len(got))
	}
}
