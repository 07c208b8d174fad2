package metrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
)

func load(t *testing.T, dir, text string) (Config, error) {
	t.Helper()
	path := filepath.Join(dir, "moat.toml")
	f, err := config.Parse(path, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return LoadConfig(f)
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ text, want string }{
		{"[metrics]\nlisten = \"9357\"\n", "moat.toml:2: metrics.listen"},
		{"[metrics]\nlisten = \":9357\"\n", "not all interfaces"},
		{"[metrics]\nbearer_token = \"x\"\n", "metrics.bearer_token: has no effect without listen"},
		{"[metrics]\nlisten = \"127.0.0.1:9357\"\nbearer_token = \"x\"\nbasic_user = \"u\"\nbasic_password = \"p\"\n", "not both"},
		{"[metrics]\nlisten = \"127.0.0.1:9357\"\nbasic_user = \"u\"\n", "metrics.basic_password: basic_user and basic_password go together"},
		{"[metrics]\nlisten = \"127.0.0.1:9357\"\ntls_cert = \"c.pem\"\n", "metrics.tls_key"},
		{"[metrics]\nlisten = \"127.0.0.1:9357\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n", "moat.toml:3: metrics.tls_cert"},
		{"[metrics]\nlisten = \"127.0.0.1:9357\"\nport = 3\n", "metrics.port"},
	} {
		_, err := load(t, dir, tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
	c, err := load(t, dir, "")
	if err != nil || c.Listen != "" {
		t.Errorf("no [metrics] table: got %+v, %v; want metrics off", c, err)
	}
}

func get(t *testing.T, client *http.Client, url string, auth func(*http.Request)) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if auth != nil {
		auth(req)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestAuthentication(t *testing.T) {
	healthy := func(context.Context) error { return nil }
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	basic := func(u, p string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth(u, p) } }
	for _, tc := range []struct {
		name string
		cfg  Config
		auth func(*http.Request)
		want int
	}{
		{"open", Config{}, nil, 200},
		{"bearer missing", Config{BearerToken: "s3cret"}, nil, 401},
		{"bearer wrong", Config{BearerToken: "s3cret"}, bearer("s3cre"), 401},
		{"bearer right", Config{BearerToken: "s3cret"}, bearer("s3cret"), 200},
		{"basic wrong password", Config{BasicUser: "prom", BasicPassword: "pw"}, basic("prom", "px"), 401},
		{"basic wrong user", Config{BasicUser: "prom", BasicPassword: "pw"}, basic("prox", "pw"), 401},
		{"basic right", Config{BasicUser: "prom", BasicPassword: "pw"}, basic("prom", "pw"), 200},
	} {
		srv := httptest.NewServer(Handler(tc.cfg, NewRegistry(nil), healthy, quiet))
		for _, path := range []string{"/metrics", "/healthz"} {
			if code, _ := get(t, srv.Client(), srv.URL+path, tc.auth); code != tc.want {
				t.Errorf("%s %s: status %d, want %d", tc.name, path, code, tc.want)
			}
		}
		srv.Close()
	}
}

func TestHealthz(t *testing.T) {
	var state error
	srv := httptest.NewServer(Handler(Config{}, NewRegistry(nil), func(context.Context) error { return state }, quiet))
	defer srv.Close()
	if code, body := get(t, srv.Client(), srv.URL+"/healthz", nil); code != 200 || body != "ok\n" {
		t.Errorf("healthy: %d %q, want 200 \"ok\\n\"", code, body)
	}
	state = errors.New("store: redis store does not answer: connection refused")
	code, body := get(t, srv.Client(), srv.URL+"/healthz", nil)
	if code != 503 || !strings.Contains(body, "redis store does not answer") {
		t.Errorf("unhealthy: %d %q, want 503 with the reason", code, body)
	}
}

// TestTLS serves over HTTPS with a certificate from the configuration and refuses plain HTTP.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := load(t, dir, "[metrics]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nbearer_token = \"t\"\n")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Listen(cfg, Handler(cfg, NewRegistry(nil), func(context.Context) error { return nil }, quiet), quiet)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Close()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	code, body := get(t, client, "https://"+s.Addr().String()+"/metrics", func(r *http.Request) { r.Header.Set("Authorization", "Bearer t") })
	if code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("https scrape: %d, body without go_goroutines", code)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + s.Addr().String() + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP was served on the TLS endpoint")
		}
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// TestExampleConfig: the package's example.toml is a valid [metrics] table, off by default.
func TestExampleConfig(t *testing.T) {
	f, err := config.Load("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(f)
	if err != nil || c.Listen != "" {
		t.Errorf("example.toml: %+v, %v; want metrics off, as documented", c, err)
	}
}
