package dkim_test

import (
	"crypto/ed25519"
	"crypto/rsa"
	"testing"

	"github.com/moatmail/moat/auth/dkim"
)

func TestParseKeyRecordRoundTrip(t *testing.T) {
	for _, typ := range []string{"rsa", "ed25519"} {
		k, err := dkim.GenerateKey(typ)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := dkim.TXTRecord(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		pub, err := dkim.ParseKeyRecord(rec)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		eq := false
		switch p := pub.(type) {
		case *rsa.PublicKey:
			eq = p.Equal(k.Public())
		case ed25519.PublicKey:
			eq = p.Equal(k.Public())
		}
		if !eq {
			t.Errorf("%s: parsed key differs from the generated one", typ)
		}
	}
	for _, bad := range []string{"v=DKIM1; k=rsa; p=", "v=DKIM1; k=rsa", "v=DKIM2; p=AAAA", "k=ed25519; p=AAAA", "k=dsa; p=AAAA", "p=!!!"} {
		if _, err := dkim.ParseKeyRecord(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
