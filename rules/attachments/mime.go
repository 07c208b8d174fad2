package attachments

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits bound the MIME walk, so that a hostile structure costs a known amount of memory and time.
type Limits struct {
	MaxDepth       int // nesting of multiparts and message/rfc822 parts below the top-level entity
	MaxParts       int // entities in all, the top-level one and multiparts included
	MaxHeaderBytes int // one entity's header block
}

// ErrLimit is wrapped by the walk's error when a limit of [Limits] was reached; the walk stops there.
var ErrLimit = errors.New("mime limit reached")

// Entity is one MIME entity as the walker found it.
type Entity struct {
	Path        string   // position in the tree like IMAP section numbers: "" for the message, "1", "1.2", …
	Depth       int      // 0 for the message itself
	Header      []Field  // the entity's header fields, unfolded
	MediaType   string   // lower-cased type/subtype; "" when Content-Type is missing
	Params      []Param  // Content-Type parameters as written
	Disposition string   // lower-cased disposition type ("attachment", "inline"), "" when missing
	DispParams  []Param  // Content-Disposition parameters as written
	Encoding    string   // lower-cased Content-Transfer-Encoding
	Defects     []string // what was wrong with this entity's header
}

// Field is one header field.
type Field struct{ Name, Value string }

// Get returns the value of the first field called name (case-insensitive).
func (e *Entity) Get(name string) (string, bool) {
	for _, f := range e.Header {
		if strings.EqualFold(f.Name, name) {
			return f.Value, true
		}
	}
	return "", false
}

// Label is the entity's position for findings: "1.2", or "body" for a message that is not multipart.
func (e *Entity) Label() string {
	if e.Path == "" {
		return "body"
	}
	return e.Path
}

// WalkResult is what a walk found besides the leaf parts it handed to the visitor.
type WalkResult struct {
	Parts   int      // entities seen
	Defects []string // structural defects, each "part: what"
}

// Visitor receives each leaf entity and a reader of its body as transmitted (still transfer-encoded). It may
// read as little of the body as it wants; the walker skips the rest.
type Visitor func(e *Entity, body io.Reader) error

// delim is what ended an entity's body: a boundary delimiter of one of the enclosing multiparts, or the end
// of the message.
type delim struct {
	level int  // index into the boundary stack; -1 for the end of the message
	close bool // "--boundary--"
}

var eof = delim{level: -1}

type walker struct {
	br      *bufio.Reader
	lim     Limits
	visit   Visitor
	res     WalkResult
	scratch []byte
}

// lineBuf is the longest line the walker looks at as a whole: longer lines are handled in pieces, and only a
// line's first piece can be a boundary delimiter (RFC 2046 boundaries are at most 70 characters).
const lineBuf = 16 << 10

// Walk reads a whole message from r, one line at a time with bounded memory whatever its size, and calls
// visit for every leaf entity (the message body itself when it is not multipart). Broken structure
// (a missing close delimiter, a multipart without boundary, a header line without a colon, a truncated
// message) is recorded in WalkResult.Defects and the walk goes on as mail clients do; only a reached limit
// (ErrLimit), a read error or the visitor's error stops it.
func Walk(r io.Reader, lim Limits, visit Visitor) (WalkResult, error) {
	w := &walker{br: bufio.NewReaderSize(r, lineBuf), lim: lim, visit: visit}
	_, err := w.entity(0, "", nil)
	return w.res, err
}

func (w *walker) defect(e *Entity, format string, args ...any) {
	w.res.Defects = append(w.res.Defects, e.Label()+": "+fmt.Sprintf(format, args...))
}

// entity reads one entity (header, then body) whose body ends at a delimiter of bounds (or the end of input).
func (w *walker) entity(depth int, path string, bounds []string) (delim, error) {
	w.res.Parts++
	e := &Entity{Path: path, Depth: depth}
	if w.lim.MaxParts > 0 && w.res.Parts > w.lim.MaxParts {
		return eof, fmt.Errorf("%w: more than %d MIME parts", ErrLimit, w.lim.MaxParts)
	}
	hit, ended, err := w.header(e, bounds)
	if err != nil {
		return eof, err
	}
	parseEntityHeader(e)
	for _, d := range e.Defects {
		w.defect(e, "%s", d)
	}
	if ended {
		if hit == eof && depth > 0 {
			w.defect(e, "message ends inside the part's header")
		}
		return hit, nil
	}
	switch {
	case strings.HasPrefix(e.MediaType, "multipart/"):
		boundary := paramValue(e.Params, "boundary")
		if boundary == "" {
			w.defect(e, "%s without a boundary parameter", e.MediaType)
			return w.leaf(e, bounds)
		}
		if w.lim.MaxDepth > 0 && depth+1 > w.lim.MaxDepth {
			return eof, fmt.Errorf("%w: MIME parts nested deeper than %d", ErrLimit, w.lim.MaxDepth)
		}
		return w.multipart(e, boundary, bounds)
	case (e.MediaType == "message/rfc822" || e.MediaType == "message/global") && identityEncoding(e.Encoding):
		if w.lim.MaxDepth > 0 && depth+1 > w.lim.MaxDepth {
			return eof, fmt.Errorf("%w: MIME parts nested deeper than %d", ErrLimit, w.lim.MaxDepth)
		}
		return w.entity(depth+1, join(path, 1), bounds)
	}
	return w.leaf(e, bounds)
}

func identityEncoding(enc string) bool {
	return enc == "" || enc == "7bit" || enc == "8bit" || enc == "binary"
}

func join(path string, n int) string {
	if path == "" {
		return strconv.Itoa(n)
	}
	return path + "." + strconv.Itoa(n)
}

// header reads the header block into e. ended reports that the entity ended before its body (a delimiter or
// the end of input came first); hit says which.
func (w *walker) header(e *Entity, bounds []string) (hit delim, ended bool, err error) {
	var raw []byte
	size := 0
	midLine := false
	var lines [][]byte
	for {
		line, rerr := w.br.ReadSlice('\n')
		if len(line) == 0 && rerr != nil {
			if rerr != io.EOF {
				return eof, true, fmt.Errorf("read message: %w", rerr)
			}
			if raw != nil {
				lines = append(lines, raw)
			}
			e.Header = unfold(e, lines)
			return eof, true, nil
		}
		size += len(line)
		if w.lim.MaxHeaderBytes > 0 && size > w.lim.MaxHeaderBytes {
			return eof, true, fmt.Errorf("%w: header of part %s longer than %d bytes", ErrLimit, e.Label(), w.lim.MaxHeaderBytes)
		}
		start := !midLine
		midLine = rerr == bufio.ErrBufferFull
		if start && raw == nil {
			if d, ok := matchDelim(line, bounds); ok {
				e.Header = unfold(e, lines)
				return d, true, nil
			}
			if len(trimEOL(line)) == 0 { // the blank line ends the header
				e.Header = unfold(e, lines)
				return eof, false, nil
			}
		}
		raw = append(raw, line...)
		if !midLine {
			lines = append(lines, raw)
			raw = nil
		}
		if rerr != nil && rerr != bufio.ErrBufferFull {
			if rerr != io.EOF {
				return eof, true, fmt.Errorf("read message: %w", rerr)
			}
			e.Header = unfold(e, lines)
			return eof, true, nil
		}
	}
}

// unfold joins continuation lines to their field and splits name from value.
func unfold(e *Entity, lines [][]byte) []Field {
	var out []Field
	for _, l := range lines {
		l = trimEOL(l)
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
			if len(out) == 0 {
				e.Defects = append(e.Defects, "header starts with a continuation line")
				continue
			}
			out[len(out)-1].Value += " " + strings.TrimSpace(string(l))
			continue
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || len(bytes.TrimSpace(name)) == 0 {
			e.Defects = append(e.Defects, "header line without a field name")
			continue
		}
		out = append(out, Field{Name: string(bytes.TrimSpace(name)), Value: strings.TrimSpace(string(value))})
	}
	return out
}

func parseEntityHeader(e *Entity) {
	if v, ok := e.Get("Content-Type"); ok {
		e.MediaType, e.Params = parseParams(v)
		if !strings.Contains(e.MediaType, "/") {
			e.Defects = append(e.Defects, fmt.Sprintf("malformed Content-Type %q", printable(e.MediaType)))
		}
	}
	if v, ok := e.Get("Content-Disposition"); ok {
		e.Disposition, e.DispParams = parseParams(v)
	}
	if v, ok := e.Get("Content-Transfer-Encoding"); ok {
		e.Encoding = strings.ToLower(strings.TrimSpace(v))
	}
}

// multipart reads the preamble, the parts and the epilogue of a multipart entity.
func (w *walker) multipart(e *Entity, boundary string, bounds []string) (delim, error) {
	inner := append(append([]string(nil), bounds...), boundary)
	level := len(inner) - 1
	hit, err := w.skip(inner) // preamble
	if err != nil {
		return eof, err
	}
	if hit.level != level {
		w.defect(e, "multipart without any part (boundary %q never seen)", printable(boundary))
		return hit, nil
	}
	n := 0
	for !hit.close {
		n++
		hit, err = w.entity(e.Depth+1, join(e.Path, n), inner)
		if err != nil {
			return eof, err
		}
		if hit.level != level {
			w.defect(e, "multipart not closed (no final --%s--)", printable(boundary))
			return hit, nil
		}
	}
	if len(bounds) == 0 {
		_, err = w.skip(nil) // epilogue of the message
		return eof, err
	}
	return w.skip(bounds) // epilogue up to the enclosing boundary
}

// leaf hands the body to the visitor and skips what it did not read.
func (w *walker) leaf(e *Entity, bounds []string) (delim, error) {
	body := &bodyReader{w: w, bounds: bounds}
	if w.visit != nil {
		if err := w.visit(e, body); err != nil {
			return eof, err
		}
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return eof, err
	}
	return body.hit, nil
}

// skip reads lines up to a delimiter of bounds or the end of input.
func (w *walker) skip(bounds []string) (delim, error) {
	b := &bodyReader{w: w, bounds: bounds, discard: true}
	_, err := io.Copy(io.Discard, b)
	return b.hit, err
}

// bodyReader returns a body up to the next delimiter. The line break before a delimiter belongs to the
// delimiter (RFC 2046 section 5.1.1), so each line's break is held back until the next line is known.
type bodyReader struct {
	w       *walker
	bounds  []string
	discard bool // content not wanted (preamble, epilogue)
	store   []byte
	buf     []byte
	eol     []byte
	midLine bool
	done    bool
	hit     delim
}

func (b *bodyReader) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.done {
			return 0, io.EOF
		}
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

func (b *bodyReader) fill() error {
	line, err := b.w.br.ReadSlice('\n')
	if len(line) == 0 && err != nil {
		if err != io.EOF {
			return fmt.Errorf("read message: %w", err)
		}
		b.done, b.hit = true, eof
		b.store = append(b.store[:0], b.eol...)
		b.buf, b.eol = b.store, nil
		return nil
	}
	start := !b.midLine
	b.midLine = err == bufio.ErrBufferFull
	if start {
		if d, ok := matchDelim(line, b.bounds); ok {
			b.done, b.hit, b.eol = true, d, nil
			return nil
		}
	}
	if b.discard {
		return nil
	}
	content, eol := line, []byte(nil)
	if !b.midLine {
		content = trimEOL(line)
		eol = line[len(content):]
	}
	b.store = append(append(b.store[:0], b.eol...), content...)
	b.buf = b.store
	b.eol = append(b.eol[:0], eol...)
	return nil
}

// matchDelim reports whether line is a delimiter of one of bounds, innermost first: "--boundary" or
// "--boundary--", with trailing white space allowed.
func matchDelim(line []byte, bounds []string) (delim, bool) {
	if len(bounds) == 0 || len(line) < 3 || line[0] != '-' || line[1] != '-' {
		return delim{}, false
	}
	l := bytes.TrimRight(line[2:], " \t\r\n")
	for i := len(bounds) - 1; i >= 0; i-- {
		b := bounds[i]
		if !bytes.HasPrefix(l, []byte(b)) {
			continue
		}
		rest := l[len(b):]
		switch {
		case len(rest) == 0:
			return delim{level: i}, true
		case string(rest) == "--":
			return delim{level: i, close: true}, true
		}
	}
	return delim{}, false
}

func trimEOL(l []byte) []byte {
	l = bytes.TrimSuffix(l, []byte("\n"))
	return bytes.TrimSuffix(l, []byte("\r"))
}
