package clamd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is a set of clamd servers used with failover: a scan goes to the first healthy server (in a rotating
// order, so that the load spreads) and moves on to the next one when a server cannot be reached. A server
// that failed is marked down; a background health check pings it every interval and marks it up again.
type Pool struct {
	servers        []*member
	connectTimeout time.Duration
	attemptTimeout time.Duration
	next           atomic.Uint32

	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

type member struct {
	srv  Server
	down atomic.Bool
	mu   sync.Mutex
	last error // why it went down
}

// PoolOptions configures a Pool.
type PoolOptions struct {
	ConnectTimeout time.Duration // bounds each connection attempt
	AttemptTimeout time.Duration // bounds one scan on one server (0: only the caller's context)
	HealthInterval time.Duration // how often down servers are pinged (0: never; they are retried when all are down)
}

// NewPool returns a pool over servers and starts its health checks.
func NewPool(servers []Server, opts PoolOptions) *Pool {
	p := &Pool{connectTimeout: opts.ConnectTimeout, attemptTimeout: opts.AttemptTimeout, stop: make(chan struct{})}
	for _, s := range servers {
		p.servers = append(p.servers, &member{srv: s})
	}
	if opts.HealthInterval > 0 {
		p.wg.Add(1)
		go p.health(opts.HealthInterval)
	}
	return p
}

// Close stops the health checks.
func (p *Pool) Close() error {
	p.stopped.Do(func() { close(p.stop) })
	p.wg.Wait()
	return nil
}

func (p *Pool) health(every time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		for _, m := range p.servers {
			if !m.down.Load() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), p.connectTimeout+2*time.Second)
			err := Ping(ctx, m.srv, p.connectTimeout)
			cancel()
			if err == nil {
				m.down.Store(false)
			}
		}
	}
}

// Down lists the servers currently marked down, with the reason.
func (p *Pool) Down() map[string]error {
	out := map[string]error{}
	for _, m := range p.servers {
		if m.down.Load() {
			m.mu.Lock()
			out[m.srv.String()] = m.last
			m.mu.Unlock()
		}
	}
	return out
}

// Scan scans the message that open returns (a new reader each call, so that a retry on another server
// starts from the first byte). It returns the result, the server that answered and an error. Only
// ErrUnavailable errors move on to the next server; clamd's own error replies are final.
func (p *Pool) Scan(ctx context.Context, open func() io.Reader) (Result, Server, error) {
	n := len(p.servers)
	if n == 0 {
		return Result{}, Server{}, fmt.Errorf("%w: no servers configured", ErrUnavailable)
	}
	start := int(p.next.Add(1)-1) % n
	// Healthy servers first, then (when every server is down) the down ones, as a last resort.
	var order []*member
	for pass := 0; pass < 2; pass++ {
		for i := 0; i < n; i++ {
			m := p.servers[(start+i)%n]
			if m.down.Load() == (pass == 1) {
				order = append(order, m)
			}
		}
	}
	var errs []error
	for _, m := range order {
		if ctx.Err() != nil {
			break
		}
		actx, cancel := ctx, context.CancelFunc(func() {})
		if p.attemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, p.attemptTimeout)
		}
		res, err := Instream(actx, m.srv, p.connectTimeout, open())
		cancel()
		if err == nil {
			m.down.Store(false)
			return res, m.srv, nil
		}
		if !errors.Is(err, ErrUnavailable) {
			return Result{}, m.srv, err
		}
		m.mu.Lock()
		m.last = err
		m.mu.Unlock()
		m.down.Store(true)
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return Result{}, Server{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	return Result{}, Server{}, errors.Join(errs...)
}
