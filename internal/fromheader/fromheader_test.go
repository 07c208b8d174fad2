package fromheader

import (
	"strings"
	"testing"
)

func TestDomain(t *testing.T) {
	tests := []struct {
		name   string
		fields []string
		want   string
		err    string
	}{
		{"plain", []string{"a@Example.COM"}, "example.com", ""},
		{"utf-8 name", []string{"=?utf-8?q?J=C3=BCrgen?= <a@example.com>"}, "example.com", ""},
		{"koi8-r name", []string{"=?koi8-r?B?8NLJ18XU?= <a@example.com>"}, "example.com", ""},
		{"windows-1251 name", []string{"=?windows-1251?B?z/Do4uXy?= <a@example.com>"}, "example.com", ""},
		{"gb2312 name", []string{"=?gb2312?B?xOO6ww==?= <a@example.com>"}, "example.com", ""},
		{"iso-2022-jp name", []string{"=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?= <a@example.jp>"}, "example.jp", ""},
		{"unknown charset", []string{"=?x-made-up?Q?abc?= <a@example.com>"}, "example.com", ""},
		{"unicode domain", []string{"Jürgen <j@Bücher.example>"}, "xn--bcher-kva.example", ""},
		{"two addresses one domain", []string{"a@example.com, b@EXAMPLE.com"}, "example.com", ""},
		{"two domains", []string{"a@example.com, b@example.net"}, "", "several domains"},
		{"two fields", []string{"a@example.com", "a@example.com"}, "", "2 From fields"},
		{"no domain", []string{"undisclosed-recipients:;"}, "", "empty From"},
		{"garbage", []string{"<<<"}, "", "unparsable"},
		{"bad idn", []string{"a@a\u0301\u200d.example"}, "", "not a valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Domain(tc.fields)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Domain = %q, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Domain = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func FuzzDomain(f *testing.F) {
	f.Add("=?koi8-r?B?8NLJ18XU?= <a@example.com>")
	f.Add("a@b.example, c@d.example")
	f.Add("=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?= <a@例え.jp>")
	f.Fuzz(func(t *testing.T, v string) {
		d, err := Domain([]string{v})
		if err == nil && d == "" {
			t.Fatalf("no error and no domain for %q", v)
		}
	})
}
