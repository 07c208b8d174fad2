// Package fromheader implements the one reading of the RFC5322.From field that DKIM signing and DMARC
// share: the domain of its address(es).
//
// Only the addresses matter, so a display name is never a reason to fail: encoded words (RFC 2047) in any
// charset are accepted, those in charsets Go does not know (koi8-r, windows-1251, gb2312, iso-2022-jp …)
// pass through undecoded. The domain is returned in ASCII (A-labels, see addr.DomainASCII).
package fromheader

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/moatmail/moat/internal/addr"
)

var parser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	// The display name is never used: keep its bytes whatever the charset.
	CharsetReader: func(charset string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// Domain returns the domain of the single From: field given (its unfolded value), or an error when there
// is not exactly one field, it does not parse, an address has no domain, the addresses are in several
// domains (RFC 5322 section 3.6.2 allows several; DKIM and DMARC need one), or the domain is not a valid
// internationalized domain name.
func Domain(fields []string) (string, error) {
	if len(fields) != 1 {
		return "", fmt.Errorf("%d From fields", len(fields))
	}
	addrs, err := parser.ParseList(strings.TrimSpace(fields[0]))
	if err != nil {
		return "", fmt.Errorf("unparsable From: %w", err)
	}
	domain := ""
	for _, a := range addrs {
		at := strings.LastIndexByte(a.Address, '@')
		if at < 0 {
			return "", fmt.Errorf("From address %q without domain", a.Address)
		}
		d, err := addr.DomainASCII(a.Address[at+1:])
		if err != nil {
			return "", fmt.Errorf("From address %q: %w", a.Address, err)
		}
		if domain != "" && d != domain {
			return "", errors.New("From addresses in several domains")
		}
		domain = d
	}
	if domain == "" {
		return "", errors.New("empty From")
	}
	return domain, nil
}
