package clamd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/moatmail/moat/scanners/servers"
)

// Errors of the client. A scan error wraps one of them, so that callers can tell a dead server (try the next
// one) from clamd's own refusal (every server would refuse the same stream).
var (
	// ErrUnavailable: the server could not be reached, or the connection broke or timed out.
	ErrUnavailable = errors.New("clamd: server unavailable")
	// ErrClamd: clamd answered with an error of its own ("INSTREAM size limit exceeded", a database error).
	ErrClamd = errors.New("clamd: error reply")
	// ErrSizeLimit: clamd refused the stream as longer than its StreamMaxLength ("INSTREAM size limit
	// exceeded"). Such an error also wraps ErrClamd.
	ErrSizeLimit = errors.New("above clamd's StreamMaxLength")
	// ErrProtocol: the reply was not one clamd sends.
	ErrProtocol = errors.New("clamd: malformed reply")
)

// chunkSize is the size of one INSTREAM chunk. clamd reads chunks into a buffer of its own; 64 KiB keeps the
// number of system calls low and the memory per scan small.
const chunkSize = 64 * 1024

// maxReply bounds a reply; clamd's replies are one short line.
const maxReply = 4096

// Result is the outcome of a scan that clamd completed.
type Result struct {
	Infected bool
	Virus    string // the signature name clamd reported, when Infected
}

// Ping sends zPING and expects PONG.
func Ping(ctx context.Context, srv servers.Server, connectTimeout time.Duration) error {
	c, done, err := servers.Dial(ctx, ErrUnavailable, srv, connectTimeout)
	if err != nil {
		return err
	}
	defer done()
	if _, err := c.Write([]byte("zPING\x00")); err != nil {
		return servers.IOErr(ctx, ErrUnavailable, srv, "write", err)
	}
	reply, err := readReply(c)
	if err != nil {
		return servers.IOErr(ctx, ErrUnavailable, srv, "read", err)
	}
	if reply != "PONG" {
		return fmt.Errorf("%w: %s: PING answered %q", ErrProtocol, srv, reply)
	}
	return nil
}

// Instream scans r with the INSTREAM command: "zINSTREAM\0", then chunks each preceded by its length as a
// 4-byte big-endian number, then a zero-length chunk. The context bounds the whole exchange: connecting,
// sending and waiting for the verdict.
func Instream(ctx context.Context, srv servers.Server, connectTimeout time.Duration, r io.Reader) (Result, error) {
	c, done, err := servers.Dial(ctx, ErrUnavailable, srv, connectTimeout)
	if err != nil {
		return Result{}, err
	}
	defer done()
	buf := make([]byte, 4+chunkSize)
	copy(buf, "zINSTREAM\x00")
	if _, err := c.Write(buf[:10]); err != nil {
		return Result{}, servers.IOErr(ctx, ErrUnavailable, srv, "write", err)
	}
	for {
		n, rerr := io.ReadFull(r, buf[4:])
		if n > 0 {
			binary.BigEndian.PutUint32(buf[:4], uint32(n))
			if _, err := c.Write(buf[:4+n]); err != nil {
				// clamd stops reading when the stream passes StreamMaxLength and says so before closing:
				// keep its own words rather than "broken pipe".
				if reply, rerr := readReplyBriefly(ctx, c); rerr == nil && reply != "" {
					return parseOrClamdErr(srv, reply)
				}
				return Result{}, servers.IOErr(ctx, ErrUnavailable, srv, "write", err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			// The spool failed: not the server's fault.
			return Result{}, fmt.Errorf("clamd: reading the message: %w", rerr)
		}
	}
	binary.BigEndian.PutUint32(buf[:4], 0)
	if _, err := c.Write(buf[:4]); err != nil {
		if reply, rerr := readReplyBriefly(ctx, c); rerr == nil && reply != "" {
			return parseOrClamdErr(srv, reply)
		}
		return Result{}, servers.IOErr(ctx, ErrUnavailable, srv, "write", err)
	}
	reply, err := readReply(c)
	if err != nil {
		return Result{}, servers.IOErr(ctx, ErrUnavailable, srv, "read", err)
	}
	return parseOrClamdErr(srv, reply)
}

func parseOrClamdErr(srv servers.Server, reply string) (Result, error) {
	res, err := ParseReply(reply)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", srv, err)
	}
	return res, nil
}

// readReplyBriefly reads a reply that clamd may have sent before it closed the stream, waiting at most a
// second (and never past ctx).
func readReplyBriefly(ctx context.Context, c net.Conn) (string, error) {
	dl := time.Now().Add(time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = c.SetReadDeadline(dl)
	return readReply(c)
}

// readReply reads one reply up to its terminating NUL (z-commands) or newline, or to the end of the
// connection, and returns it without the terminator.
func readReply(r io.Reader) (string, error) {
	var b []byte
	tmp := make([]byte, 512)
	for {
		n, err := r.Read(tmp)
		b = append(b, tmp[:n]...)
		if i := bytes.IndexAny(b, "\x00\n"); i >= 0 {
			return string(b[:i]), nil
		}
		if len(b) > maxReply {
			return "", fmt.Errorf("%w: reply longer than %d bytes", ErrProtocol, maxReply)
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				return string(b), nil
			}
			if errors.Is(err, io.EOF) {
				return "", errors.New("connection closed without a reply")
			}
			return "", err
		}
	}
}

// ParseReply parses clamd's answer to INSTREAM (terminator removed):
//
//	stream: OK
//	stream: Eicar-Test-Signature FOUND
//	INSTREAM size limit exceeded. ERROR
//	stream: Can't allocate memory ERROR
//
// A session id prefix ("1: ") is accepted. An ERROR reply gives an error wrapping ErrClamd that keeps
// clamd's text, and also ErrSizeLimit for the size limit; anything else gives ErrProtocol.
func ParseReply(reply string) (Result, error) {
	s := strings.TrimRight(reply, "\r\n\x00")
	if i := strings.Index(s, ": "); i > 0 && isDigits(s[:i]) {
		s = s[i+2:]
	}
	if strings.HasSuffix(s, " ERROR") || s == "ERROR" {
		text := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(s, "stream:"), "ERROR"))
		if text == "" {
			text = "unspecified error"
		}
		if strings.Contains(strings.ToLower(text), "size limit exceeded") {
			return Result{}, fmt.Errorf("%w: %s (%w)", ErrClamd, servers.Printable(text), ErrSizeLimit)
		}
		return Result{}, fmt.Errorf("%w: %s", ErrClamd, servers.Printable(text))
	}
	rest, ok := strings.CutPrefix(s, "stream: ")
	if !ok {
		return Result{}, fmt.Errorf("%w: %q", ErrProtocol, servers.Printable(s))
	}
	if rest == "OK" {
		return Result{}, nil
	}
	if name, ok := strings.CutSuffix(rest, " FOUND"); ok {
		name = strings.TrimSpace(name)
		if name == "" || !isPrintable(name) {
			return Result{}, fmt.Errorf("%w: bad signature name in %q", ErrProtocol, servers.Printable(s))
		}
		return Result{Infected: true, Virus: name}, nil
	}
	return Result{}, fmt.Errorf("%w: %q", ErrProtocol, servers.Printable(s))
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
