package dnsbl

import (
	"net/netip"
	"testing"
)

func TestParseSite(t *testing.T) {
	tests := []struct {
		site       string
		zone       string
		weight     float64
		match, not []string
		wantErr    bool
	}{
		{site: "zen.test=127.0.0.[2..11]*3", zone: "zen.test", weight: 3,
			match: []string{"127.0.0.2", "127.0.0.11"}, not: []string{"127.0.0.1", "127.0.0.12", "127.0.1.2"}},
		{site: "wl.test=127.0.[0..255].[1;3]*-2", zone: "wl.test", weight: -2,
			match: []string{"127.0.9.1", "127.0.200.3"}, not: []string{"127.0.9.2"}},
		{site: "all.test.", zone: "all.test", match: []string{"127.0.0.2", "127.1.2.3"}, not: []string{"192.0.2.1", "10.0.0.2", "::1"}},
		{site: "z.test=127.0.0.[1;4..6]", zone: "z.test", match: []string{"127.0.0.5"}, not: []string{"127.0.0.3"}},
		{site: "z.test=127.0.0", wantErr: true},
		{site: "z.test=127.0.0.[1..", wantErr: true},
		{site: "z.test=127.0.0.300", wantErr: true},
		{site: "z.test*x", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.site, func(t *testing.T) {
			zone, f, w, _, err := parseSite(tc.site)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if zone != tc.zone || w != tc.weight {
				t.Errorf("zone, weight = %q, %g; want %q, %g", zone, w, tc.zone, tc.weight)
			}
			for _, m := range tc.match {
				if !f.match(netip.MustParseAddr(m)) {
					t.Errorf("%s does not match", m)
				}
			}
			for _, m := range tc.not {
				if f.match(netip.MustParseAddr(m)) {
					t.Errorf("%s matches", m)
				}
			}
		})
	}
}

func FuzzParseSite(f *testing.F) {
	f.Add("zen.test=127.0.0.[2..11]*3")
	f.Add("z=127.0.[0..255].[1;3]*-2")
	f.Add("z=[[..]]....*")
	f.Fuzz(func(t *testing.T, s string) {
		_, flt, _, _, err := parseSite(s)
		if err == nil {
			flt.match(netip.MustParseAddr("127.0.0.2"))
		}
	})
}

func TestFilterOverlaps(t *testing.T) {
	mk := func(s string) filter {
		if s == "" {
			return filter{}
		}
		f, err := parseFilter(s)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	tests := []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"", "127.0.0.2", true},
		{"", "10.0.0.2", false},
		{"127.0.0.[2..3]", "127.0.0.[10;11]", false},
		{"127.0.0.[2..4]", "127.0.0.4", true},
		{"127.0.[0..255].2", "127.0.5.[1..2]", true},
	}
	for _, tc := range tests {
		a, b := mk(tc.a), mk(tc.b)
		if got := a.overlaps(&b); got != tc.want {
			t.Errorf("%q overlaps %q = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
