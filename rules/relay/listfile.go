package relay

import "github.com/moatmail/moat/config"

// ParseLists hands the entries of an inline key and then those of a list file to parse, and locates an error
// at the key the bad entry came from (the file key for a line of the file) as well as at the entry's own file
// and line.
func ParseLists(sec *config.Section, key string, inline []string, fileKey, file string, parse func([]config.ListLine) error) error {
	if err := parse(sec.InlineList(key, inline)); err != nil {
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

// LoadDomains builds a domain set from an inline key and a list file.
func LoadDomains(sec *config.Section, key string, inline []string, fileKey, file string) (*Domains, error) {
	d := NewDomains()
	err := ParseLists(sec, key, inline, fileKey, file, func(lines []config.ListLine) error {
		for _, l := range lines {
			if err := d.Add(l.Text); err != nil {
				return l.Errorf("%v", err)
			}
		}
		return nil
	})
	return d, err
}

// LoadNetworks builds a network list from an inline key and a list file.
func LoadNetworks(sec *config.Section, key string, inline []string, fileKey, file string) (*Networks, error) {
	n := &Networks{}
	err := ParseLists(sec, key, inline, fileKey, file, func(lines []config.ListLine) error {
		more, err := ParseNetworks(lines)
		if err != nil {
			return err
		}
		n.prefixes = append(n.prefixes, more.prefixes...)
		return nil
	})
	return n, err
}
