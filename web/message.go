package web

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/microcosm-cc/bluemonday"
	"golang.org/x/text/encoding/htmlindex"
)

// Limits of what the message page shows: a message of 25 MB is listed in full, but only so much of its text
// is put on the page.
const (
	maxParts    = 500
	maxDepth    = 16
	maxTextShow = 1 << 20
)

// field is one header field, decoded for display.
type field struct{ Name, Value string }

// attachment is a part listed by name, type and size; its content is never shown.
type attachment struct {
	Name, Type string
	Size       int64
}

// parsed is what the message page shows of a message.
type parsed struct {
	Headers     []field
	Text        string // the first text/plain part, decoded
	Truncated   bool   // Text was cut at maxTextShow
	HTML        []string
	Attachments []attachment
	Errors      []string // each part that could not be read, and why
}

// parseMessage reads a message for the message page. It never fails: what it cannot read becomes a line in
// Errors, and the rest is still shown.
func parseMessage(r io.Reader) *parsed {
	p := &parsed{}
	br := bufio.NewReader(r)
	hdr, err := readHeader(br)
	if err != nil {
		p.Errors = append(p.Errors, "header: "+err.Error())
	}
	for _, f := range hdr {
		p.Headers = append(p.Headers, field{f.Name, decodeWords(f.Value)})
	}
	p.walk(mimeHeader(hdr), br, "message", 0)
	return p
}

// readHeader reads the header block in order, unfolding continuation lines.
func readHeader(br *bufio.Reader) ([]field, error) {
	var out []field
	for {
		line, err := br.ReadString('\n')
		if err != nil && line == "" {
			if err == io.EOF {
				return out, nil
			}
			return out, err
		}
		trimmed := strings.TrimRight(line, "\r\n")
		if trimmed == "" {
			return out, nil
		}
		if (trimmed[0] == ' ' || trimmed[0] == '\t') && len(out) > 0 {
			out[len(out)-1].Value += " " + strings.TrimSpace(trimmed)
			continue
		}
		name, value, ok := strings.Cut(trimmed, ":")
		if !ok {
			return out, fmt.Errorf("line %q is not a header field", truncate(trimmed, 80))
		}
		out = append(out, field{strings.TrimSpace(name), strings.TrimSpace(value)})
		if err != nil {
			return out, nil
		}
	}
}

func mimeHeader(fields []field) textproto.MIMEHeader {
	h := textproto.MIMEHeader{}
	for _, f := range fields {
		h.Add(f.Name, f.Value)
	}
	return h
}

// walk reads one part (the whole message at depth 0) and its sub-parts.
func (p *parsed) walk(h textproto.MIMEHeader, body io.Reader, where string, depth int) {
	ctype := h.Get("Content-Type")
	mediaType, params, err := mime.ParseMediaType(ctype)
	if ctype == "" {
		mediaType, params, err = "text/plain", map[string]string{}, nil
	}
	if err != nil {
		p.fail(where, "Content-Type %q: %v", truncate(ctype, 80), err)
		mediaType, params = "application/octet-stream", map[string]string{}
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		p.walkMultipart(body, params["boundary"], where, depth)
		return
	}
	if len(p.Attachments)+len(p.HTML)+1 > maxParts {
		p.fail(where, "more than %d parts; the rest is not shown", maxParts)
		return
	}
	disp, dparams, _ := mime.ParseMediaType(h.Get("Content-Disposition"))
	name := decodeWords(dparams["filename"])
	if name == "" {
		name = decodeWords(params["name"])
	}
	data, err := io.ReadAll(decodeTransfer(h.Get("Content-Transfer-Encoding"), body))
	if err != nil {
		p.fail(where, "%v", err)
	}
	inline := disp != "attachment" && name == ""
	switch {
	case inline && mediaType == "text/plain" && p.Text == "" && len(data) > 0:
		p.Text, err = decodeCharset(params["charset"], data)
		if err != nil {
			p.fail(where, "%v", err)
		}
		if len(p.Text) > maxTextShow {
			p.Text, p.Truncated = strings.ToValidUTF8(p.Text[:maxTextShow], ""), true
		}
	case inline && mediaType == "text/html":
		text, err := decodeCharset(params["charset"], data)
		if err != nil {
			p.fail(where, "%v", err)
		}
		p.HTML = append(p.HTML, sanitizeHTML(text))
	default:
		if name == "" {
			name = "(no name)"
		}
		p.Attachments = append(p.Attachments, attachment{Name: name, Type: mediaType, Size: int64(len(data))})
	}
}

func (p *parsed) walkMultipart(body io.Reader, boundary, where string, depth int) {
	if boundary == "" {
		p.fail(where, "multipart without a boundary")
		return
	}
	if depth >= maxDepth {
		p.fail(where, "parts nested deeper than %d are not shown", maxDepth)
		return
	}
	mr := multipart.NewReader(body, boundary)
	for i := 1; ; i++ {
		// NextRawPart leaves the transfer encoding to walk, the same for every part.
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return
		}
		sub := fmt.Sprintf("%s part %d", where, i)
		if err != nil {
			p.fail(sub, "%v", err)
			return
		}
		p.walk(part.Header, part, sub, depth+1)
	}
}

func (p *parsed) fail(where, format string, args ...any) {
	p.Errors = append(p.Errors, where+": "+fmt.Sprintf(format, args...))
}

// decodeTransfer undoes a Content-Transfer-Encoding; an unknown one is passed through as it is.
func decodeTransfer(cte string, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &base64Cleaner{r: r})
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return r
}

// base64Cleaner drops what base64.NewDecoder does not skip itself (spaces, tabs), which senders put in.
type base64Cleaner struct{ r io.Reader }

func (c *base64Cleaner) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	j := 0
	for _, x := range b[:n] {
		if x != ' ' && x != '\t' {
			b[j] = x
			j++
		}
	}
	return j, err
}

// decodeCharset turns text in charset into UTF-8; an unknown charset keeps the bytes, invalid ones replaced.
func decodeCharset(charset string, data []byte) (string, error) {
	cs := strings.ToLower(strings.TrimSpace(charset))
	if cs == "" || cs == "us-ascii" || cs == "utf-8" || cs == "utf8" {
		return strings.ToValidUTF8(string(data), "\uFFFD"), nil
	}
	enc, err := htmlindex.Get(cs)
	if err != nil {
		return strings.ToValidUTF8(string(data), "\uFFFD"), fmt.Errorf("unknown charset %q, shown as UTF-8", charset)
	}
	out, err := enc.NewDecoder().Bytes(data)
	if err != nil {
		return strings.ToValidUTF8(string(data), "\uFFFD"), fmt.Errorf("charset %q: %v", charset, err)
	}
	return string(out), nil
}

var wordDecoder = &mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
	enc, err := htmlindex.Get(strings.ToLower(charset))
	if err != nil {
		return nil, err
	}
	return enc.NewDecoder().Reader(r), nil
}}

// decodeWords decodes RFC 2047 encoded words; on failure the value is shown as written.
func decodeWords(s string) string {
	if out, err := wordDecoder.DecodeHeader(s); err == nil {
		return strings.ToValidUTF8(out, "\uFFFD")
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// addressOf returns the bare address of a From: value, or the value itself.
func addressOf(s string) string {
	if a, err := mail.ParseAddress(s); err == nil {
		return a.Address
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// htmlPolicy is bluemonday's policy for user-generated content, with every image that is not inline data
// replaced by a blank one (a remote image tells the sender the mail was opened) and links opening outside
// the sandboxed frame, which blocks them.
var htmlPolicy = func() *bluemonday.Policy {
	p := bluemonday.UGCPolicy()
	p.AllowDataURIImages()
	p.RequireNoReferrerOnLinks(true)
	p.AddTargetBlankToFullyQualifiedLinks(true)
	p.RewriteSrc(func(u *url.URL) {
		if u.Scheme != "data" {
			*u = url.URL{Scheme: "data", Opaque: blankGIF}
		}
	})
	return p
}()

const blankGIF = "image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

// sanitizeHTML returns the HTML part safe to show: no scripts, styles, forms, frames or remote images.
func sanitizeHTML(s string) string {
	return htmlPolicy.Sanitize(s)
}
