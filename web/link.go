package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// A digest link opens a session for one recipient until it expires:
//
//	BASE/d?r=RECIPIENT&e=EXPIRY&s=SIGNATURE
//
// EXPIRY is a Unix time, SIGNATURE the base64url HMAC-SHA256, under the key of [web.digest] secret_file, of
// "moat-digest", the lower-cased recipient and EXPIRY separated by NUL bytes. Optional m=ID and a=ACTION lead
// to a confirmation page for one message; they are navigation, not authority, and are not signed.

var (
	errLinkExpired = errors.New("this digest link has expired")
	errLinkBad     = errors.New("this digest link is not valid")
)

func linkMAC(secret []byte, rcpt string, expires int64) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("moat-digest\x00" + strings.ToLower(rcpt) + "\x00" + strconv.FormatInt(expires, 10)))
	return m.Sum(nil)
}

// signLink returns the query of a digest link for rcpt, valid until expires.
func signLink(secret []byte, rcpt string, expires time.Time) url.Values {
	e := expires.Unix()
	return url.Values{
		"r": {rcpt},
		"e": {strconv.FormatInt(e, 10)},
		"s": {base64.RawURLEncoding.EncodeToString(linkMAC(secret, rcpt, e))},
	}
}

// verifyLink checks a digest link's query at now and returns its recipient and expiry.
func verifyLink(secret []byte, q url.Values, now time.Time) (rcpt string, expires time.Time, err error) {
	rcpt = q.Get("r")
	e, err := strconv.ParseInt(q.Get("e"), 10, 64)
	if rcpt == "" || err != nil {
		return "", time.Time{}, errLinkBad
	}
	sig, err := base64.RawURLEncoding.DecodeString(q.Get("s"))
	if err != nil || !hmac.Equal(sig, linkMAC(secret, rcpt, e)) {
		return "", time.Time{}, errLinkBad
	}
	expires = time.Unix(e, 0)
	if !now.Before(expires) {
		return "", time.Time{}, errLinkExpired
	}
	return rcpt, expires, nil
}
