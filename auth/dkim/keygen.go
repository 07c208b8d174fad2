package dkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/miekg/dns"

	"github.com/moatmail/moat/config"
)

// KeygenFile makes a key pair like [Keygen], writes the private key (PEM) to a new file keyPath with mode
// 0600, and writes only the DNS record to w. An existing keyPath is never overwritten: replacing a key that
// is published in DNS would break every signature until the record changes too.
func KeygenFile(keyPath string, w io.Writer, domain, selector, keyType string) error {
	var out bytes.Buffer
	if err := Keygen(&out, domain, selector, keyType); err != nil {
		return err
	}
	pemEnd := []byte("-----END PRIVATE KEY-----\n")
	i := bytes.Index(out.Bytes(), pemEnd)
	if i < 0 {
		return fmt.Errorf("dkim: no key in the generated output")
	}
	keyPEM, record := out.Bytes()[:i+len(pemEnd)], bytes.TrimLeft(out.Bytes()[i+len(pemEnd):], "\n")
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("dkim: key file: %w", err)
	}
	if _, err := f.Write(keyPEM); err != nil {
		f.Close()
		os.Remove(keyPath)
		return fmt.Errorf("dkim: write %s: %w", keyPath, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(keyPath)
		return fmt.Errorf("dkim: write %s: %w", keyPath, err)
	}
	_, err = w.Write(record)
	return err
}

// KeyFileWarnings lists the signing key files of [checks.dkimsign] that users other than the owner (and the
// group) can read: a private key others can read lets them sign mail as the domain.
func KeyFileWarnings(f *config.File) []string {
	sec := f.Section("checks.dkimsign")
	if !sec.Present() {
		return nil
	}
	var c struct {
		Keys []keyCfg `toml:"keys"`
	}
	if err := sec.Pick("keys").Decode(&c); err != nil {
		return nil // reported by the check's own validation
	}
	var out []string
	for i, k := range c.Keys {
		if k.KeyFile == "" {
			continue
		}
		path := f.Abs(k.KeyFile)
		st, err := os.Stat(path)
		if err != nil {
			continue
		}
		if st.Mode().Perm()&0o004 != 0 {
			out = append(out, sec.Errorf(fmt.Sprintf("keys[%d].key_file", i),
				"%s is readable by every user (mode %04o): chmod 600 (or 640 with moat's group)", path, st.Mode().Perm()).Error())
		}
	}
	return out
}

// Keygen makes a key pair for domain and selector and writes the private key (PEM, PKCS#8) followed by the
// DNS TXT record to publish, as a zone-file line. keyType is "rsa" (2048 bits, RFC 8301) or "ed25519"
// (RFC 8463); "" means rsa. The output can be saved whole as the key file: LoadKey skips the record.
// This is `moat dkim keygen DOMAIN SELECTOR [--type rsa|ed25519]`.
func Keygen(w io.Writer, domain, selector, keyType string) error {
	domain = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(domain)), ".")
	if _, ok := dns.IsDomainName(domain); !ok || domain == "" || !strings.Contains(domain, ".") {
		return fmt.Errorf("dkim: %q is not a domain name", domain)
	}
	if _, ok := dns.IsDomainName(selector); !ok || selector == "" || strings.ContainsAny(selector, " ;") {
		return fmt.Errorf("dkim: %q is not a valid selector", selector)
	}
	signer, err := GenerateKey(keyType)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return fmt.Errorf("dkim: marshal key: %w", err)
	}
	rec, err := TXTRecord(signer.Public())
	if err != nil {
		return err
	}
	if err := pem.Encode(w, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "\n; DNS record to publish for %s, selector %s:\n%s._domainkey.%s. 3600 IN TXT %s\n",
		domain, selector, selector, domain, quoteTXT(rec))
	return err
}

// GenerateKey makes a new signing key: "rsa" (2048 bits) or "ed25519".
func GenerateKey(keyType string) (crypto.Signer, error) {
	switch strings.ToLower(keyType) {
	case "", "rsa":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	default:
		return nil, fmt.Errorf("dkim: unknown key type %q (want rsa or ed25519)", keyType)
	}
}

// TXTRecord returns the DKIM key record for a public key (RFC 6376 section 3.6.1; for Ed25519 the raw
// 32-byte key, RFC 8463 section 4.2).
func TXTRecord(pub crypto.PublicKey) (string, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(p)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(p), nil
	default:
		return "", fmt.Errorf("dkim: unsupported public key %T", pub)
	}
}

// quoteTXT writes a record as quoted character-strings of at most 255 bytes (RFC 1035 section 3.3.14).
func quoteTXT(s string) string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, `"`+s[:255]+`"`)
		s = s[255:]
	}
	parts = append(parts, `"`+s+`"`)
	if len(parts) == 1 {
		return parts[0]
	}
	return "( " + strings.Join(parts, " ") + " )"
}
