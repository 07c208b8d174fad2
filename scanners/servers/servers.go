// Package servers implements the server lists of the content scanners (clamd, spamd): server addresses,
// connections bounded by a context, failover over several servers, and safe quoting of what a server says.
//
// # Addresses
//
// A server is "unix:/path" or "tcp:host:port"; an absolute path is a unix socket, "host:port" and
// "inet:host:port" are TCP. The host must be given and the port is a number from 1 to 65535 (service names
// are not looked up).
//
// # Failover
//
// A [Pool] sends each request to the first server that is not marked down, in a rotating order so that the load
// spreads, and moves on to the next when the attempt fails with the caller's "unavailable" error (the server
// could not be reached, or broke or timed out, or said it cannot serve now); any other error is final, since
// every server would answer the same. Each attempt is bounded by the caller's AttemptTimeout; when there is none
// (0) and the caller's context has a deadline, an attempt on one of k servers still to be tried gets a k-th of
// the time left, so that a server that accepts connections and never answers cannot use up the whole deadline:
// with a 30 s timeout and two servers, the first gets 15 s, the second the rest (more when the first failed
// fast). The servers marked down do not count while servers that are up remain to be tried: the last server up
// gets all the time left, and the down ones only what it leaves. A server that failed within its own attempt is
// marked down (one cut off by the caller's deadline is not: that says nothing about the server) and tried only
// after all the others, as a last resort. It is up again when a request on it succeeds, when [Pool.MarkUp] is
// called (clamd pings the servers that are down), or, with RetryAfter, once that time has passed (spamd).
package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moatmail/moat/metrics"
)

// Server is one server address: network "unix" or "tcp".
type Server struct {
	Network string
	Addr    string
}

func (s Server) String() string { return s.Network + ":" + s.Addr }

// Parse parses "unix:/path", "tcp:host:port", an absolute path (a unix socket) or "host:port".
func Parse(s string) (Server, error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if p == "" {
			return Server{}, fmt.Errorf("empty socket path in %q", s)
		}
		return Server{"unix", p}, nil
	case strings.HasPrefix(s, "/"):
		return Server{"unix", s}, nil
	case strings.HasPrefix(s, "tcp:"), strings.HasPrefix(s, "inet:"):
		_, a, _ := strings.Cut(s, ":")
		s = a
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Server{}, fmt.Errorf("want unix:/path or tcp:host:port, got %q", s)
	}
	if host == "" {
		return Server{}, fmt.Errorf("no host in %q (write 127.0.0.1:PORT for this machine)", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
		return Server{}, fmt.Errorf("port %q in %q is not a number from 1 to 65535", port, s)
	}
	return Server{"tcp", s}, nil
}

// Dial connects to srv within ctx and connectTimeout, and ties the connection's deadline to ctx: the
// context's deadline becomes the connection's, and cancelling the context unblocks reads and writes at once.
// The returned function undoes that and closes the connection. A failure to connect wraps unavailable.
func Dial(ctx context.Context, unavailable error, srv Server, connectTimeout time.Duration) (net.Conn, func(), error) {
	d := net.Dialer{Timeout: connectTimeout}
	c, err := d.DialContext(ctx, srv.Network, srv.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", unavailable, srv, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// Cancellation without a deadline (or before it) unblocks reads and writes at once.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	return c, func() { stop(); c.Close() }, nil
}

// IOErr turns the error of a read or write (op) on a connection to srv into an error wrapping unavailable,
// which also wraps the context's error when the deadline or cancellation caused it.
func IOErr(ctx context.Context, unavailable error, srv Server, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %s: %s: %w", unavailable, srv, op, ctx.Err())
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The connection's deadline is the context's: it may fire a moment before the context's own timer.
		return fmt.Errorf("%w: %s: %s: %w", unavailable, srv, op, context.DeadlineExceeded)
	}
	return fmt.Errorf("%w: %s: %s: %v", unavailable, srv, op, err)
}

// Printable makes text a server sent safe for logs and replies: printable ASCII, with '?' for any other
// byte, and at most 200 bytes.
func Printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 200; i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Options configures a Pool.
type Options struct {
	// Unavailable is the caller's error for a server that cannot serve (clamd.ErrUnavailable,
	// spamd.ErrUnavailable): attempts failing with it move on to the next server. Required.
	Unavailable error
	// AttemptTimeout bounds one attempt on one server (0: only the caller's context).
	AttemptTimeout time.Duration
	// RetryAfter is how long a failed server stays down (0: until a request on it succeeds or MarkUp).
	RetryAfter time.Duration
	// Scanner names the scanner ("clamd", "spamd") in the metrics of its servers' state and errors.
	Scanner string
}

// Pool is a list of servers used with failover (see the package comment).
type Pool struct {
	opts    Options
	members []*member
	next    atomic.Uint32
}

type member struct {
	srv       Server
	mu        sync.Mutex
	down      bool
	downUntil time.Time // with RetryAfter
	last      error     // why it went down
}

// NewPool returns a pool over list, every server up.
func NewPool(list []Server, opts Options) *Pool {
	p := &Pool{opts: opts}
	for _, s := range list {
		p.members = append(p.members, &member{srv: s})
		metrics.ScannerUp(opts.Scanner, s.String(), true)
	}
	return p
}

// Servers returns the servers in the order given.
func (p *Pool) Servers() []Server {
	out := make([]Server, len(p.members))
	for i, m := range p.members {
		out[i] = m.srv
	}
	return out
}

func (p *Pool) isDown(m *member, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.down && (p.opts.RetryAfter <= 0 || now.Before(m.downUntil))
}

// Down lists the servers currently marked down, with the reason.
func (p *Pool) Down() map[string]error {
	out := map[string]error{}
	now := time.Now()
	for _, m := range p.members {
		if p.isDown(m, now) {
			m.mu.Lock()
			out[m.srv.String()] = m.last
			m.mu.Unlock()
		}
	}
	return out
}

// DownServers returns the servers currently marked down.
func (p *Pool) DownServers() []Server {
	var out []Server
	now := time.Now()
	for _, m := range p.members {
		if p.isDown(m, now) {
			out = append(out, m.srv)
		}
	}
	return out
}

// MarkUp marks srv up again.
func (p *Pool) MarkUp(srv Server) {
	for _, m := range p.members {
		if m.srv == srv {
			p.markUp(m)
		}
	}
}

func (p *Pool) markUp(m *member) {
	m.mu.Lock()
	m.down, m.downUntil = false, time.Time{}
	m.mu.Unlock()
	metrics.ScannerUp(p.opts.Scanner, m.srv.String(), true)
}

func (p *Pool) markDown(m *member, err error) {
	m.mu.Lock()
	m.down, m.last = true, err
	if p.opts.RetryAfter > 0 {
		m.downUntil = time.Now().Add(p.opts.RetryAfter)
	}
	m.mu.Unlock()
	metrics.ScannerUp(p.opts.Scanner, m.srv.String(), false)
}

// Try runs attempt on the servers of p in turn, as the package comment says, until one succeeds or fails
// with an error that is not p's unavailable error; it returns that attempt's value, server and error. Each
// attempt gets ctx, bounded by AttemptTimeout; without one, when ctx has a deadline and more than one server
// is left to try, an attempt gets an equal share of the time left (see the package comment). A server is
// marked down only when it failed within its own attempt: not when ctx (the caller's deadline) ended, since
// that says nothing about the server. When every server was unavailable (or ctx ended first), Try returns
// the zero value, no server, and an error wrapping the unavailable error.
func Try[T any](ctx context.Context, p *Pool, attempt func(ctx context.Context, srv Server) (T, error)) (T, Server, error) {
	var zero T
	unavailable := p.opts.Unavailable
	n := len(p.members)
	if n == 0 {
		return zero, Server{}, fmt.Errorf("%w: no servers configured", unavailable)
	}
	start := int(p.next.Add(1)-1) % n
	// Servers that are up first, then (when every one of them failed) the down ones, as a last resort.
	now := time.Now()
	var up, down []*member
	for i := 0; i < n; i++ {
		m := p.members[(start+i)%n]
		if p.isDown(m, now) {
			down = append(down, m)
		} else {
			up = append(up, m)
		}
	}
	var errs []error
	order := append(up, down...)
	for i, m := range order {
		if ended(ctx) {
			break
		}
		// The servers that are up share the time; the down ones, a last resort, get what is left after them.
		left := len(up) - i
		if i >= len(up) {
			left = len(order) - i
		}
		v, err := tryOne(ctx, attemptTimeout(ctx, p.opts.AttemptTimeout, left), m.srv, attempt)
		if err == nil {
			p.markUp(m)
			return v, m.srv, nil
		}
		if !errors.Is(err, unavailable) {
			metrics.ScannerError(p.opts.Scanner, errorKind(err))
			return v, m.srv, err
		}
		metrics.ScannerError(p.opts.Scanner, "unavailable")
		errs = append(errs, err)
		if ended(ctx) {
			// The caller's deadline ran out during this attempt: the server may be healthy.
			break
		}
		p.markDown(m, err)
	}
	if len(errs) == 0 {
		return zero, Server{}, fmt.Errorf("%w: %w", unavailable, ctx.Err())
	}
	return zero, Server{}, errors.Join(errs...)
}

// errorKind names a final (not unavailable) scan error for the metrics.
func errorKind(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "error"
}

// ended reports whether ctx is done or its deadline has passed (a connection's deadline, which is the
// context's, can fire a moment before the context's own timer).
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// attemptTimeout is the bound of one attempt when left servers (this one included) remain to be tried:
// the configured one, or else, with a deadline on ctx and more than one server left, the time left shared
// equally among them, so that a silent server cannot use up the time of the healthy ones after it.
func attemptTimeout(ctx context.Context, configured time.Duration, left int) time.Duration {
	if configured > 0 || left <= 1 {
		return configured
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	share := time.Until(dl) / time.Duration(left)
	if share <= 0 {
		return 0
	}
	return share
}

func tryOne[T any](ctx context.Context, timeout time.Duration, srv Server, attempt func(context.Context, Server) (T, error)) (T, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return attempt(ctx, srv)
}
