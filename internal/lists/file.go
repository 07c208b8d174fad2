package lists

import (
	"errors"
	"net/netip"

	"github.com/moatmail/moat/config"
)

// LineError is an error in one list line. Its text names the line's file and line like config.ListLine.Errorf;
// Load uses the line to locate the error once, at the configuration key or in the list file.
type LineError struct {
	Line config.ListLine
	Err  error
}

func (e *LineError) Error() string { return e.Line.Errorf("%v", e.Err).Error() }

func (e *LineError) Unwrap() error { return e.Err }

// Load hands the entries of an inline key and then those of a list file to parse, and locates an error
// at the key the bad entry came from (the file key for a line of the file) as well as at the entry's own file
// and line. An inline entry's file and line are the key's own, so they are named once:
// "moat.toml:4: checks.relay.local_domains: "bad domain": …"; a list file's line after the file key:
// "moat.toml:5: checks.relay.local_domains_file: /etc/moat/domains:3: "bad domain": …".
func Load(sec *config.Section, key string, inline []string, fileKey, file string, parse func([]config.ListLine) error) error {
	if err := parse(sec.InlineList(key, inline)); err != nil {
		var le *LineError
		if errors.As(err, &le) {
			return sec.Errorf(key, "%q: %v", le.Line.Text, le.Err)
		}
		return sec.Errorf(key, "%v", err)
	}
	if file == "" {
		return nil
	}
	lines, err := sec.List("", nil, fileKey, file)
	if err != nil {
		return err
	}
	if err := parse(lines); err != nil {
		return sec.Errorf(fileKey, "%v", err)
	}
	return nil
}

// LoadDomains builds a domain set from an inline key and a list file, with an extra test of each entry (nil:
// none) for checks that refuse some entries (relay refuses public suffixes).
func LoadDomains(sec *config.Section, key string, inline []string, fileKey, file string, test func(entry string) error) (*Domains, error) {
	d := NewDomains()
	err := Load(sec, key, inline, fileKey, file, func(lines []config.ListLine) error {
		for _, l := range lines {
			if err := d.Add(l.Text); err != nil {
				return &LineError{Line: l, Err: err}
			}
			if test != nil {
				if err := test(l.Text); err != nil {
					return &LineError{Line: l, Err: err}
				}
			}
		}
		return nil
	})
	return d, err
}

// LoadNetworks builds a network list from an inline key and a list file, with an extra test of each prefix
// (nil: none).
func LoadNetworks(sec *config.Section, key string, inline []string, fileKey, file string, test func(netip.Prefix) error) (*Networks, error) {
	n := &Networks{}
	err := Load(sec, key, inline, fileKey, file, func(lines []config.ListLine) error {
		more, err := ParseNetworks(lines)
		if err != nil {
			return err
		}
		if test != nil {
			for i, p := range more.prefixes {
				if err := test(p); err != nil {
					return &LineError{Line: lines[i], Err: err}
				}
			}
		}
		n.prefixes = append(n.prefixes, more.prefixes...)
		return nil
	})
	return n, err
}
