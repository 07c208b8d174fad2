package tlsauth_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/tlsauth"
)

type sess struct {
	ip   string
	tls  bool
	auth string
	from string
}

func mail(t *testing.T, e *policy.Engine, in sess) (policy.Decision, *policy.Session) {
	t.Helper()
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr(in.ip)
	if in.tls {
		s.TLS = policy.TLSInfo{Version: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", CipherBits: "256", CertSubject: "CN=client.example"}
	}
	if in.auth != "" {
		s.Auth = policy.AuthInfo{Type: "PLAIN", Authen: in.auth}
	}
	e.Connect(ctx, s)
	return e.Mail(ctx, s, in.from, ""), s
}

const policyConfig = `
[checks.tlsauth]
require_tls_networks = ["192.0.2.0/24"]
require_tls_sender_domains = [".bank.example"]
`

func TestPolicy(t *testing.T) {
	tests := []struct {
		name   string
		config string
		in     sess
		code   int // 0: accepted
		reason string
	}{
		{"plain mail", policyConfig, sess{ip: "198.51.100.1", from: "a@remote.example"}, 0, ""},
		{"auth without tls", policyConfig, sess{ip: "198.51.100.1", auth: "alice", from: "alice@moat.test"}, 530, tlsauth.ReasonAuthWithoutTLS},
		{"auth with tls", policyConfig, sess{ip: "198.51.100.1", tls: true, auth: "alice", from: "alice@moat.test"}, 0, ""},
		{"auth without tls allowed", policyConfig + "require_tls_for_auth = false\n", sess{ip: "198.51.100.1", auth: "alice", from: "alice@moat.test"}, 0, ""},
		{"network without tls", policyConfig, sess{ip: "192.0.2.7", from: "a@remote.example"}, 530, tlsauth.ReasonNetwork},
		{"network with tls", policyConfig, sess{ip: "192.0.2.7", tls: true, from: "a@remote.example"}, 0, ""},
		{"sender domain without tls", policyConfig, sess{ip: "198.51.100.1", from: "ceo@BANK.example"}, 530, tlsauth.ReasonSender},
		{"sender subdomain without tls", policyConfig, sess{ip: "198.51.100.1", from: "x@mail.bank.example."}, 530, tlsauth.ReasonSender},
		{"sender domain with tls", policyConfig, sess{ip: "198.51.100.1", tls: true, from: "ceo@bank.example"}, 0, ""},
		{"null sender", policyConfig, sess{ip: "198.51.100.1", from: ""}, 0, ""},
		{"tempfail", policyConfig + "answer = \"tempfail\"\n", sess{ip: "192.0.2.7", from: "a@remote.example"}, 450, tlsauth.ReasonNetwork},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, s := mail(t, policytest.Engine(t, policytest.Policy+tt.config), tt.in)
			if tt.code == 0 {
				if d.Action != policy.ActContinue {
					t.Fatalf("refused: %+v", d)
				}
			} else {
				want := "5.7.0"
				if tt.code == 450 {
					want = "4.7.0"
				}
				if d.Reply.Code != tt.code || d.Reply.Enhanced != want || !strings.HasPrefix(d.Reply.Text, "Must issue a STARTTLS command first") {
					t.Fatalf("reply %v, want %d %s", d.Reply, tt.code, want)
				}
				if d.Reason != tt.reason {
					t.Errorf("reason %q, want %q", d.Reason, tt.reason)
				}
			}
			f, ok := s.Finding("tlsauth", nil)
			if !ok {
				t.Fatal("no tlsauth finding")
			}
			if tt.in.tls && !strings.Contains(f.Detail, `tls=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 cert_subject="CN=client.example"`) {
				t.Errorf("detail %q lacks the TLS facts", f.Detail)
			}
			if !tt.in.tls && !strings.Contains(f.Detail, "tls=none") {
				t.Errorf("detail %q lacks tls=none", f.Detail)
			}
			if tt.in.auth != "" && !strings.Contains(f.Detail, `auth=PLAIN auth_user="alice"`) {
				t.Errorf("detail %q lacks the AUTH facts", f.Detail)
			}
			if got := s.Get(tlsauth.FactTLS); tt.in.tls != (got == "TLSv1.3") {
				t.Errorf("fact %s = %q", tlsauth.FactTLS, got)
			}
		})
	}
}

// TestTraceHeader checks that the TLS and AUTH facts reach the trace header and Authentication-Results of an
// accepted message.
func TestTraceHeader(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+policyConfig)
	ctx := context.Background()
	s := policy.NewSession()
	s.ClientIP = netip.MustParseAddr("198.51.100.1")
	s.TLS = policy.TLSInfo{Version: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256"}
	s.Auth = policy.AuthInfo{Type: "PLAIN", Authen: "alice"}
	e.Connect(ctx, s)
	e.Mail(ctx, s, "alice@moat.test", "")
	e.Rcpt(ctx, s, "bob@remote.example", "")
	s.Headers = []policy.Header{{Name: "From", Value: " alice@moat.test"}}
	e.Headers(ctx, s)
	out := e.EOM(ctx, s, policytest.Msg("From: alice@moat.test\r\n\r\nhi\r\n"))
	var trace, ar string
	for _, h := range append(out.AddHeaders, out.InsertHeaders...) {
		switch h.Name {
		case "X-Moat":
			trace = h.Value
		case "Authentication-Results":
			ar = h.Value
		}
	}
	if !strings.Contains(trace, "tls=TLSv1.3/TLS_AES_128_GCM_SHA256") || !strings.Contains(trace, "auth=alice") {
		t.Errorf("trace header %q lacks TLS or AUTH", trace)
	}
	if !strings.Contains(ar, "smtp.auth=alice") {
		t.Errorf("Authentication-Results %q lacks smtp.auth", ar)
	}
}
