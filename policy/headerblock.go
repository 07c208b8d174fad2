package policy

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// ParseHeaderBlock splits a message with CRLF line ends into its header fields, as the MTA hands them to the
// milter (the name, and the value after the colon with its leading space and folding kept), and the body that
// follows the empty line. A line that is neither a field nor a continuation ends the header block, as the MTA
// would end it there: the body then starts with that line.
func ParseHeaderBlock(msg []byte) (headers []Header, body []byte, err error) {
	sc := bufio.NewScanner(bytes.NewReader(msg))
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	consumed := 0 // bytes of msg taken by the lines scanned so far
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		n, line, err := scanCRLFLines(data, atEOF)
		consumed += n
		return n, line, err
	})
	bodyStart, lineStart := -1, 0
	for ; sc.Scan(); lineStart = consumed {
		line := sc.Text()
		if line == "" {
			bodyStart = consumed
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(headers) > 0 {
			headers[len(headers)-1].Value += "\r\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			// A broken header line: the MTA would have ended the header block here and passed the rest as body.
			bodyStart = lineStart
			break
		}
		headers = append(headers, Header{Name: name, Value: value})
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read header: %w", err)
	}
	if bodyStart < 0 {
		bodyStart = len(msg)
	}
	return headers, msg[bodyStart:], nil
}

// HeaderBlock rebuilds the header block from its fields as the milter received them, CRLF line ends and the
// empty line that ends the block included: what the spool and the body streams see before the body.
func HeaderBlock(hs []Header) []byte {
	var b bytes.Buffer
	for _, h := range hs {
		writeHeaderField(&b, h.Name, h.Value)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// writeHeaderField writes one field, its line ends made CRLF whatever the MTA passed.
func writeHeaderField(b *bytes.Buffer, name, value string) {
	b.WriteString(name)
	b.WriteByte(':')
	b.WriteString(strings.ReplaceAll(strings.ReplaceAll(value, "\r\n", "\n"), "\n", "\r\n"))
	b.WriteString("\r\n")
}

func scanCRLFLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.Index(data, []byte("\r\n")); i >= 0 {
		return i + 2, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
