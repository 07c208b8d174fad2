// Package spamc is a client of SpamAssassin's spamd (the SPAMC protocol): CHECK, SYMBOLS, REPORT, TELL and
// PING, with failover across servers (package servers) and optional zlib compression. The spamd check
// scores mail with it; `moat learn` and the quarantine teach spamd with TELL.
package spamc

import (
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moatmail/moat/scanners/servers"
)

// maxReply bounds a reply: SYMBOLS and TELL answers are small; a REPORT is a few KiB.
const maxReply = 1 << 20

// Client talks to one or more spamd servers, with failover (package servers): a request goes to the first
// server that is not marked down (in a rotating order) and moves to the next when a server cannot be reached
// or breaks the connection. A server marked down is retried after RetryAfter, or when every server is down.
type Client struct {
	pool           *servers.Pool
	connectTimeout time.Duration
	compress       bool
	noCompress     map[servers.Server]*atomic.Bool // spamd said it cannot inflate (no Compress::Zlib)
}

// ClientOptions configures a Client.
type ClientOptions struct {
	ConnectTimeout time.Duration // each connection attempt (default 2s)
	AttemptTimeout time.Duration // one request on one server (0: only the caller's context)
	RetryAfter     time.Duration // how long a failed server is skipped (default 10s)
	Compress       bool          // send bodies zlib-compressed ("Compress: zlib") to servers that accept it
}

// NewClient returns a client for list.
func NewClient(list []servers.Server, opts ClientOptions) *Client {
	c := &Client{connectTimeout: opts.ConnectTimeout, compress: opts.Compress,
		noCompress: map[servers.Server]*atomic.Bool{}}
	if c.connectTimeout <= 0 {
		c.connectTimeout = 2 * time.Second
	}
	retryAfter := opts.RetryAfter
	if retryAfter <= 0 {
		retryAfter = 10 * time.Second
	}
	for _, s := range list {
		c.noCompress[s] = new(atomic.Bool)
	}
	c.pool = servers.NewPool(list, servers.Options{Unavailable: ErrUnavailable, AttemptTimeout: opts.AttemptTimeout,
		RetryAfter: retryAfter, Scanner: "spamd"})
	return c
}

// Servers lists the client's servers, in the configured order.
func (c *Client) Servers() []servers.Server { return c.pool.Servers() }

// Down lists the servers currently skipped, with the reason.
func (c *Client) Down() map[string]error { return c.pool.Down() }

// Body is a message to send: Open returns a new reader from the first byte (a failover starts again), Size
// is its exact length.
type Body struct {
	Open func() io.Reader
	Size int64
}

// BytesBody wraps a byte slice.
func BytesBody(b []byte) Body {
	return Body{Open: func() io.Reader { return bytes.NewReader(b) }, Size: int64(len(b))}
}

// FileBody opens a file for reading; the caller closes it.
func FileBody(f *os.File) (Body, error) {
	fi, err := f.Stat()
	if err != nil {
		return Body{}, err
	}
	return Body{Open: func() io.Reader { return io.NewSectionReader(f, 0, fi.Size()) }, Size: fi.Size()}, nil
}

// Do sends req with body to the servers in turn until one answers, and returns the parsed reply and the
// server. req.ContentLength and req.Compress are set here. Only ErrUnavailable errors fail over, and the
// error codes that say that this spamd cannot serve now (EX_UNAVAILABLE, EX_SOFTWARE, EX_OSERR, EX_IOERR,
// EX_TEMPFAIL, EX_TIMEOUT), which wrap both ErrSpamd and ErrUnavailable; spamd's other error replies are
// final, except a refusal of compression, which is retried uncompressed.
func (c *Client) Do(ctx context.Context, req Request, body *Body) (*Response, servers.Server, error) {
	return servers.Try(ctx, c.pool, func(ctx context.Context, srv servers.Server) (*Response, error) {
		return c.attempt(ctx, srv, req, body)
	})
}

// attempt sends req to srv (within the attempt timeout, which Do applies).
func (c *Client) attempt(ctx context.Context, srv servers.Server, req Request, body *Body) (*Response, error) {
	useZlib := c.compress && body != nil && !c.noCompress[srv].Load()
	resp, err := c.exchange(ctx, srv, req, body, useZlib)
	if useZlib && err != nil && errors.Is(err, ErrSpamd) && resp != nil && resp.Code == 76 &&
		strings.Contains(strings.ToLower(resp.Message), "compress") {
		// spamd without Compress::Zlib: remember, and send this one plain.
		c.noCompress[srv].Store(true)
		resp, err = c.exchange(ctx, srv, req, body, false)
	}
	if err != nil && errors.Is(err, ErrSpamd) && resp != nil && serverSide(resp.Code) {
		// This spamd cannot serve now (EX_TEMPFAIL, EX_UNAVAILABLE…): another one may.
		return resp, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return resp, err
}

// exchange sends one request on a new connection and reads the whole reply (spamd closes the connection
// after it). The context's deadline bounds all of it.
func (c *Client) exchange(ctx context.Context, srv servers.Server, req Request, body *Body, useZlib bool) (*Response, error) {
	var payload io.Reader
	req.ContentLength, req.Compress = -1, false
	if body != nil {
		req.ContentLength = body.Size
		if useZlib {
			// The length must be exact and come first: compress once only to count the bytes, then again
			// while sending, so that memory stays bounded whatever the size (`moat learn` streams files of
			// any size). The compressor is deterministic; exchange checks the count anyway.
			n, err := compressedSize(body.Open())
			if err != nil {
				return nil, err
			}
			req.Compress, req.ContentLength = true, n
		}
	} else if req.Command != CmdPing {
		req.ContentLength = 0
	}
	head, err := req.Header()
	if err != nil {
		return nil, err
	}
	conn, done, err := servers.Dial(ctx, ErrUnavailable, srv, c.connectTimeout)
	if err != nil {
		return nil, err
	}
	defer done()
	if body != nil {
		payload = body.Open()
		if useZlib {
			zr := compressing(payload)
			defer zr.Close() // stops the compressor when the exchange ends early
			payload = zr
		}
	}

	if _, err := conn.Write(head); err != nil {
		return nil, servers.IOErr(ctx, ErrUnavailable, srv, "write", err)
	}
	if payload != nil {
		n, err := io.Copy(conn, payload)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || isConnErr(err) {
				// spamd may refuse early and close: keep its words when it said something.
				if resp, perr := readResponse(ctx, conn, srv); perr == nil || errors.Is(perr, ErrSpamd) {
					return resp, perr
				}
				return nil, servers.IOErr(ctx, ErrUnavailable, srv, "write", err)
			}
			return nil, fmt.Errorf("spamd: reading the message: %w", err)
		}
		if n != req.ContentLength {
			return nil, fmt.Errorf("spamd: message was %d bytes, %d announced", n, req.ContentLength)
		}
	}
	// Half-close so that spamd sees the end of the body even if it reads to EOF.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	return readResponse(ctx, conn, srv)
}

// countWriter counts the bytes written to it.
type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// compressedSize is the length of r zlib-compressed, found without keeping the compressed bytes.
func compressedSize(r io.Reader) (int64, error) {
	var cw countWriter
	zw := zlib.NewWriter(&cw)
	if _, err := io.Copy(zw, r); err != nil {
		return 0, fmt.Errorf("spamd: reading the message: %w", err)
	}
	if err := zw.Close(); err != nil {
		return 0, fmt.Errorf("spamd: compressing: %w", err)
	}
	return cw.n, nil
}

// compressing returns r zlib-compressed as a stream (the same bytes as compressedSize counts). Closing
// the reader stops the compressing goroutine.
func compressing(r io.Reader) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		zw := zlib.NewWriter(pw)
		_, err := io.Copy(zw, r) // a read error is the spool's: exchange reports it as such
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err) // nil: EOF for the reader
	}()
	return pr
}

func isConnErr(err error) bool {
	s := err.Error()
	return strings.Contains(s, "broken pipe") || strings.Contains(s, "connection reset")
}

func readResponse(ctx context.Context, conn net.Conn, srv servers.Server) (*Response, error) {
	data, err := io.ReadAll(io.LimitReader(conn, maxReply+1))
	if err != nil {
		return nil, servers.IOErr(ctx, ErrUnavailable, srv, "read", err)
	}
	if len(data) > maxReply {
		return nil, fmt.Errorf("%w: %s: reply longer than %d bytes", ErrProtocol, srv, maxReply)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: %s: connection closed without a reply", ErrUnavailable, srv)
	}
	resp, err := ParseResponse(data)
	if err != nil {
		return resp, fmt.Errorf("%s: %w", srv, err)
	}
	return resp, nil
}

// Result is spamd's verdict on a message.
type Result struct {
	Spam      bool
	Score     float64
	Threshold float64
	Symbols   []string
	Report    string // REPORT only
	Server    servers.Server
}

// Check sends the message with SYMBOLS (or REPORT) and returns spamd's verdict. user is the User header
// ("" for none).
func (c *Client) Check(ctx context.Context, cmd Command, user string, body Body) (Result, error) {
	if cmd != CmdSymbols && cmd != CmdReport && cmd != CmdCheck {
		return Result{}, fmt.Errorf("spamd: Check with command %s", cmd)
	}
	resp, srv, err := c.Do(ctx, Request{Command: cmd, User: user}, &body)
	if err != nil {
		return Result{Server: srv}, err
	}
	if !resp.HasSpam {
		return Result{Server: srv}, fmt.Errorf("%w: %s: no Spam header in the %s reply", ErrProtocol, srv, cmd)
	}
	res := Result{Spam: resp.Spam, Score: resp.Score, Threshold: resp.Threshold, Server: srv}
	switch cmd {
	case CmdSymbols:
		if res.Symbols, err = resp.Symbols(); err != nil {
			return Result{Server: srv}, fmt.Errorf("%s: %w", srv, err)
		}
	case CmdReport:
		res.Report = string(resp.Body)
	}
	return res, nil
}

// Class is what TELL teaches spamd.
type Class string

// The classes of `moat learn`.
const (
	Spam   Class = "spam"
	Ham    Class = "ham"
	Forget Class = "forget"
)

// ParseClass validates a class word. spamd itself accepts any Message-class, so the client checks it.
func ParseClass(s string) (Class, error) {
	switch c := Class(strings.ToLower(s)); c {
	case Spam, Ham, Forget:
		return c, nil
	}
	return "", fmt.Errorf("spamd: unknown learning class %q (want spam, ham or forget)", s)
}

// Tell teaches spamd's Bayes database (local) that the message is spam or ham, or makes it forget the
// message. It reports whether spamd changed anything (false: it had learned this message as this class
// already, or Bayes is off).
func (c *Client) Tell(ctx context.Context, class Class, user string, body Body) (bool, error) {
	req := Request{Command: CmdTell, User: user}
	switch class {
	case Spam, Ham:
		req.MessageClass, req.Set = string(class), "local"
	case Forget:
		req.Remove = "local"
	default:
		return false, fmt.Errorf("spamd: unknown learning class %q", class)
	}
	resp, _, err := c.Do(ctx, req, &body)
	if err != nil {
		return false, err
	}
	if class == Forget {
		return strings.Contains(resp.Headers["didremove"], "local"), nil
	}
	return strings.Contains(resp.Headers["didset"], "local"), nil
}

// Ping asks every server for PONG and returns the first error.
func (c *Client) Ping(ctx context.Context) error {
	for _, srv := range c.pool.Servers() {
		resp, err := c.exchange(ctx, srv, Request{Command: CmdPing}, nil, false)
		if err != nil {
			return err
		}
		if resp.Message != "PONG" {
			return fmt.Errorf("%w: %s: PING answered %q", ErrProtocol, srv, servers.Printable(resp.Message))
		}
	}
	return nil
}
