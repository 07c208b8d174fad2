package dkim

import (
	"errors"
	"io"
	"sync"
)

// errBufferFull is returned to the verifier when the writer got too far ahead of it.
var errBufferFull = errors.New("dkim: verifier fell behind, buffer limit reached")

// bufPipe is a pipe whose Write never blocks: the bytes wait in memory until the reader takes them. The
// verifier reads the header block, then looks up the keys (DNS) before it reads the body; meanwhile the MTA
// keeps sending, and the milter must not stall it. Beyond max buffered bytes the pipe gives up: the reader
// gets errBufferFull and later writes are dropped.
type bufPipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	chunks [][]byte
	size   int
	max    int
	closed bool  // writer done
	rerr   error // error for the reader after the data (io.EOF when closed)
	gone   bool  // reader gone: drop writes
}

func newBufPipe(max int) *bufPipe {
	p := &bufPipe{max: max}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// Write copies b into the pipe. It never blocks and never fails: a pipe over its limit drops the data.
func (p *bufPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.gone || p.rerr != nil {
		return len(b), nil
	}
	if p.size+len(b) > p.max {
		p.rerr = errBufferFull
		p.chunks, p.size = nil, 0
		p.cond.Broadcast()
		return len(b), nil
	}
	p.chunks = append(p.chunks, append([]byte(nil), b...))
	p.size += len(b)
	p.cond.Broadcast()
	return len(b), nil
}

// CloseWrite ends the data: the reader gets io.EOF after it.
func (p *bufPipe) CloseWrite() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.cond.Broadcast()
}

// CloseRead makes the reader fail with err now and later writes be dropped.
func (p *bufPipe) CloseRead(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gone = true
	if p.rerr == nil {
		p.rerr = err
	}
	p.chunks, p.size = nil, 0
	p.cond.Broadcast()
}

// Read blocks until data arrives or the pipe is closed.
func (p *bufPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.chunks) == 0 && !p.closed && p.rerr == nil {
		p.cond.Wait()
	}
	if p.rerr != nil {
		return 0, p.rerr
	}
	if len(p.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.chunks[0])
	if n == len(p.chunks[0]) {
		p.chunks[0] = nil
		p.chunks = p.chunks[1:]
	} else {
		p.chunks[0] = p.chunks[0][n:]
	}
	p.size -= n
	return n, nil
}
