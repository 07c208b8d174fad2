package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrKeyRevoked says the key record has an empty p= (RFC 6376 section 3.6.1: the key was revoked).
var ErrKeyRevoked = errors.New("dkim: key revoked (empty p=)")

// ParseKeyRecord parses a DKIM key record (RFC 6376 section 3.6.1; Ed25519: RFC 8463) and returns its
// public key. It is the inverse of TXTRecord, for checking that a published record matches a private key.
func ParseKeyRecord(txt string) (crypto.PublicKey, error) {
	tags := parseTags(txt)
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return nil, fmt.Errorf("dkim: key record version %q, want DKIM1", v)
	}
	p, ok := tags["p"]
	if !ok {
		return nil, errors.New("dkim: key record without p=")
	}
	p = strings.Join(strings.Fields(p), "")
	if p == "" {
		return nil, ErrKeyRevoked
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("dkim: key record p= is not base64: %w", err)
	}
	switch k := strings.ToLower(tags["k"]); k {
	case "", "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			// Some publishers put a bare PKCS#1 key in p=.
			if rk, err2 := x509.ParsePKCS1PublicKey(der); err2 == nil {
				return rk, nil
			}
			return nil, fmt.Errorf("dkim: key record p= is not an RSA public key: %w", err)
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("dkim: key record k=rsa holds a %T", pub)
		}
		return rk, nil
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("dkim: ed25519 key of %d bytes, want %d", len(der), ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(der), nil
	default:
		return nil, fmt.Errorf("dkim: unknown key type k=%s", k)
	}
}
