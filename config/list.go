package config

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// ListLine is one entry of a list file, with where it came from so that a parser can report the file and line.
type ListLine struct {
	Text   string
	Source string // file path, or "config key" for inline entries
	Line   int
}

// Errorf returns an error that names the entry's file and line.
func (l ListLine) Errorf(format string, args ...any) error {
	return fmt.Errorf("%s:%d: %q: %s", l.Source, l.Line, l.Text, fmt.Sprintf(format, args...))
}

// ReadList reads a list file: one entry a line; blank lines and lines starting with '#' are skipped, and
// " #" starts a trailing comment. Surrounding white space is trimmed.
func ReadList(path string) ([]ListLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read list: %w", err)
	}
	defer f.Close()
	var out []ListLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	for sc.Scan() {
		n++
		if text := cleanListLine(sc.Text()); text != "" {
			out = append(out, ListLine{Text: text, Source: path, Line: n})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read list %s: %w", path, err)
	}
	return out, nil
}

// InlineList turns entries given in the TOML file into list lines located at the key.
func (s *Section) InlineList(key string, entries []string) []ListLine {
	full := s.path + "." + key
	out := make([]ListLine, 0, len(entries))
	for _, e := range entries {
		if text := cleanListLine(e); text != "" {
			out = append(out, ListLine{Text: text, Source: s.file.Path, Line: s.file.line(full)})
		}
	}
	return out
}

// List returns the entries of an inline key and of a file key together (file entries after inline ones).
// Either key may be unset. A relative file path is relative to the configuration file's directory.
func (s *Section) List(inlineKey string, inline []string, fileKey, file string) ([]ListLine, error) {
	out := s.InlineList(inlineKey, inline)
	if file != "" {
		lines, err := ReadList(s.file.Abs(file))
		if err != nil {
			return nil, s.Errorf(fileKey, "%v", err)
		}
		out = append(out, lines...)
	}
	return out, nil
}

func cleanListLine(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "#") {
		return ""
	}
	if i := strings.Index(s, " #"); i >= 0 {
		s = s[:i]
	}
	if i := strings.Index(s, "\t#"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}
