package clamd

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/moatmail/moat/scanners/servers"
)

// Pool is a set of clamd servers used with failover (package servers): a scan goes to the first healthy
// server (in a rotating order, so that the load spreads) and moves on to the next one when a server cannot
// be reached. A server that failed is marked down; a background health check pings it every interval and
// marks it up again.
type Pool struct {
	servers        *servers.Pool
	connectTimeout time.Duration

	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

// PoolOptions configures a Pool.
type PoolOptions struct {
	ConnectTimeout time.Duration // bounds each connection attempt
	AttemptTimeout time.Duration // bounds one scan on one server (0: only the caller's context)
	HealthInterval time.Duration // how often down servers are pinged (0: never; they are retried when all are down)
}

// NewPool returns a pool over list and starts its health checks.
func NewPool(list []servers.Server, opts PoolOptions) *Pool {
	p := &Pool{
		servers:        servers.NewPool(list, servers.Options{Unavailable: ErrUnavailable, AttemptTimeout: opts.AttemptTimeout, Scanner: "clamd"}),
		connectTimeout: opts.ConnectTimeout,
		stop:           make(chan struct{}),
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
		for _, srv := range p.servers.DownServers() {
			ctx, cancel := context.WithTimeout(context.Background(), p.connectTimeout+2*time.Second)
			err := Ping(ctx, srv, p.connectTimeout)
			cancel()
			if err == nil {
				p.servers.MarkUp(srv)
			}
		}
	}
}

// Down lists the servers currently marked down, with the reason.
func (p *Pool) Down() map[string]error { return p.servers.Down() }

// Scan scans the message that open returns (a new reader each call, so that a retry on another server
// starts from the first byte). It returns the result, the server that answered and an error. Only
// ErrUnavailable errors move on to the next server; clamd's own error replies are final.
func (p *Pool) Scan(ctx context.Context, open func() io.Reader) (Result, servers.Server, error) {
	return servers.Try(ctx, p.servers, func(ctx context.Context, srv servers.Server) (Result, error) {
		return Instream(ctx, srv, p.connectTimeout, open())
	})
}
