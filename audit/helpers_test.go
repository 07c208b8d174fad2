package audit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/resolver/dnstest"
	"github.com/moatmail/moat/config"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func mustCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "moat audit test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a server certificate for names; expired makes one whose validity ended yesterday.
func (ca *testCA) leaf(t *testing.T, expired bool, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nb, na := time.Now().Add(-time.Hour), time.Now().Add(12*time.Hour)
	if expired {
		nb, na = time.Now().Add(-72*time.Hour), time.Now().Add(-24*time.Hour)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// runAudit audits domain against the test DNS server with short step timeouts.
func runAudit(t *testing.T, dns *dnstest.Server, opts Options) *Report {
	t.Helper()
	opts.DNSServers = []string{dns.Addr}
	if opts.StepTimeout == 0 {
		opts.StepTimeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := Run(ctx, opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

// mustLevel asserts that the report has a finding of section and check at level, whose detail contains
// each of parts, and returns it.
func mustLevel(t *testing.T, rep *Report, section, check string, level Level, parts ...string) Finding {
	t.Helper()
	fs := rep.Find(section, check)
	for _, f := range fs {
		if f.Level != level {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(f.Detail, p)
		}
		if ok {
			if level != Pass && f.Fix == "" && check != "vrfy" && check != "expn" {
				t.Errorf("%s/%s %s has no fix: %s", section, check, level, f.Detail)
			}
			return f
		}
	}
	t.Fatalf("no %s %s/%s finding containing %q; findings:\n%s", level, section, check, parts, dump(rep))
	return Finding{}
}

// mustNone asserts that the report has no finding of section and check at level.
func mustNone(t *testing.T, rep *Report, section, check string, level Level) {
	t.Helper()
	for _, f := range rep.Find(section, check) {
		if f.Level == level {
			t.Fatalf("unexpected %s %s/%s: %s\nfindings:\n%s", level, section, check, f.Detail, dump(rep))
		}
	}
}

func dump(rep *Report) string {
	var b strings.Builder
	_ = rep.WriteTable(&b)
	return b.String()
}

// mustConfig parses a moat.toml given as text, placed in dir.
func mustConfig(t *testing.T, dir, text string) *config.File {
	t.Helper()
	f, err := config.Parse(dir+"/moat.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return f
}
