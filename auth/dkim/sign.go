package dkim

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/internal/fromheader"
	"github.com/moatmail/moat/policy"
)

// DefaultSignedHeaders are the header fields signed when present (RFC 6376 section 5.4.1). From is signed
// once more than it appears ("oversigned"), so that a From added later breaks the signature.
var DefaultSignedHeaders = []string{"From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date",
	"Resent-From", "Resent-To", "Resent-Cc", "In-Reply-To", "References", "Message-ID", "MIME-Version",
	"Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "List-Id", "List-Help",
	"List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post", "List-Owner", "List-Archive"}

type keyCfg struct {
	Domain   string `toml:"domain"`
	Selector string `toml:"selector"`
	KeyFile  string `toml:"key_file"`
}

type signCfg struct {
	Headers    []string `toml:"headers"`
	Subdomains bool     `toml:"subdomains"`
	Keys       []keyCfg `toml:"keys"`
}

type key struct {
	domain, selector string
	signer           crypto.Signer
}

// SignCheck is the dkimsign check: it signs mail from authenticated clients and clients in the trusted
// networks (policy.FactTrustedNetwork) whose From: domain has a key, with relaxed/relaxed canonicalization and
// SHA-256 (RSA or Ed25519, RFC 8463). Several keys for one domain (say RSA and Ed25519) give several
// signatures. The DKIM-Signature fields go on top of the header.
//
//	[checks.dkimsign]
//	subdomains = false     # also sign for subdomains of a key's domain
//	headers = [...]        # default: DefaultSignedHeaders
//	[[checks.dkimsign.keys]]
//	domain = "example.org"
//	selector = "s2026"
//	key_file = "/etc/moat/dkim/example.org.s2026.pem"   # from `moat dkim keygen`; relative: to the config file
type SignCheck struct {
	keys       []key
	headers    []string
	subdomains bool
}

func setupSign(sec *config.Section, env *policy.Env) (policy.Check, error) {
	c := signCfg{Headers: DefaultSignedHeaders}
	if err := sec.Decode(&c); err != nil {
		return nil, err
	}
	if len(c.Keys) == 0 {
		return nil, sec.Errorf("keys", "no keys configured")
	}
	hasFrom := false
	for _, h := range c.Headers {
		if strings.EqualFold(h, "From") {
			hasFrom = true
		}
		if h == "" || strings.ContainsAny(h, ": \t") {
			return nil, sec.Errorf("headers", "%q is not a header name", h)
		}
	}
	if !hasFrom {
		return nil, sec.Errorf("headers", "must include From (RFC 6376 section 5.4)")
	}
	ch := &SignCheck{headers: c.Headers, subdomains: c.Subdomains}
	for i, k := range c.Keys {
		path := fmt.Sprintf("keys[%d]", i)
		if k.Domain == "" || k.Selector == "" || k.KeyFile == "" {
			return nil, sec.Errorf(path, "domain, selector and key_file are required")
		}
		domain, err := addr.DomainASCII(k.Domain)
		if err != nil {
			return nil, sec.Errorf(path+".domain", "%v", err)
		}
		// A relative key_file is relative to the configuration file, not to the working directory.
		signer, err := LoadKey(sec.File().Abs(k.KeyFile))
		if err != nil {
			return nil, sec.Errorf(path+".key_file", "%v", err)
		}
		ch.keys = append(ch.keys, key{domain: domain, selector: k.Selector, signer: signer})
	}
	return ch, nil
}

// Name implements policy.Check.
func (c *SignCheck) Name() string { return "dkimsign" }

// Kind implements policy.Check.
func (c *SignCheck) Kind() policy.Kind { return policy.KindInfo }

// FromDomain returns the domain of the single From: address of a header, in A-label form, or an error when
// there is not exactly one (RFC 5322 section 3.6.2 allows several addresses; DKIM and DMARC need one). A
// display name in any charset is fine: only the address is read.
func FromDomain(s *policy.Session) (string, error) {
	d, err := fromheader.Domain(s.HeaderValues("From"))
	if err != nil {
		return "", fmt.Errorf("dkim: %w", err)
	}
	return d, nil
}

// Message signs the message when the sender may and a key fits.
func (c *SignCheck) Message(ctx context.Context, s *policy.Session, m policy.Message) []policy.Finding {
	if !s.Trusted() {
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "not an authenticated or trusted sender"}}
	}
	domain, err := FromDomain(s)
	if err != nil {
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "not signed: " + err.Error()}}
	}
	var keys []key
	for _, k := range c.keys {
		if k.domain == domain || (c.subdomains && strings.HasSuffix(domain, "."+k.domain)) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return []policy.Finding{{Status: policy.StatusSkipped, Detail: "no key for " + domain}}
	}
	present := map[string]int{}
	for _, h := range s.Headers {
		present[strings.ToLower(h.Name)]++
	}
	var hkeys []string
	for _, h := range c.headers {
		n := present[strings.ToLower(h)]
		for i := 0; i < n; i++ {
			hkeys = append(hkeys, h)
		}
		if strings.EqualFold(h, "From") {
			hkeys = append(hkeys, h) // oversign
		}
	}
	f := policy.Finding{Status: "signed", Prepend: true}
	var ds []string
	for _, k := range keys {
		v, err := Sign(ctx, m.Open(), k.domain, k.selector, k.signer, hkeys)
		if err != nil {
			return []policy.Finding{{Status: policy.StatusTempError, Err: err, Detail: "signing failed",
				Verdict: policy.Tempfail, Reason: "dkim-sign-failed",
				Reply: policy.Reply{Code: 451, Enhanced: "4.3.0", Text: "Signing failed, please try again later"}}}
		}
		f.AddHeaders = append(f.AddHeaders, policy.Header{Name: "DKIM-Signature", Value: v})
		ds = append(ds, k.domain+"/"+k.selector)
	}
	f.Detail = "signed as " + strings.Join(ds, ", ")
	return []policy.Finding{f}
}

// Sign signs the message read from r and returns the value of the DKIM-Signature field as the engine wants
// it: starting with a space, folded with "\n\t".
func Sign(ctx context.Context, r io.Reader, domain, selector string, signer crypto.Signer, headers []string) (string, error) {
	s, err := msgdkim.NewSigner(&msgdkim.SignOptions{
		Domain: domain, Selector: selector, Signer: signer,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
		BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
		HeaderKeys:             headers,
	})
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(s, ctxReader{ctx, r}); err != nil {
		s.Close()
		return "", fmt.Errorf("dkim: sign: %w", err)
	}
	if err := s.Close(); err != nil {
		return "", fmt.Errorf("dkim: sign: %w", err)
	}
	sig := s.Signature()
	name, v, ok := strings.Cut(sig, ":")
	if !ok || !strings.EqualFold(name, "DKIM-Signature") {
		return "", fmt.Errorf("dkim: unexpected signature field %q", sig)
	}
	v = strings.TrimRight(strings.ReplaceAll(v, "\r\n", "\n"), "\n")
	v = strings.ReplaceAll(v, "\n ", "\n\t")
	if !strings.HasPrefix(v, " ") {
		v = " " + v
	}
	return v, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// LoadKey reads a private key in PEM: PKCS#8 (RSA or Ed25519) or PKCS#1 (RSA). Text around the PEM block
// (such as the DNS record `moat dkim keygen` prints after it) is ignored.
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: read key: %w", err)
	}
	return ParseKey(data)
}

// ParseKey parses the first PEM private key in data.
func ParseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("dkim: no PEM private key found")
		}
		switch block.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("dkim: parse key: %w", err)
			}
			switch k := k.(type) {
			case *rsa.PrivateKey:
				return checkRSA(k)
			case ed25519.PrivateKey:
				return k, nil
			default:
				return nil, fmt.Errorf("dkim: unsupported key type %T (want RSA or Ed25519)", k)
			}
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("dkim: parse key: %w", err)
			}
			return checkRSA(k)
		}
	}
}

func checkRSA(k *rsa.PrivateKey) (crypto.Signer, error) {
	// RFC 8301 section 3.2: signers MUST use keys of at least 1024 bits; 2048 is what we make.
	if k.N.BitLen() < 1024 {
		return nil, fmt.Errorf("dkim: RSA key of %d bits is too short (RFC 8301: at least 1024)", k.N.BitLen())
	}
	return k, nil
}
