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

func TestPrintable(t *testing.T) {
	if got := Printable("Eicar\x00\r\nSig\xff"); got != "Eicar???Sig?" {
		t.Errorf("Printable = %q", got)
	}
	if got := Printable(strings.Repeat("x", 300)); len(got) != 200 {
		t.Errorf("Printable kept %d bytes, want 200", len(got))
	}
}
