package attachments

import (
	"reflect"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		raw, norm string
		exts      []string
		bidi      bool
	}{
		{"Invoice.PDF", "invoice.pdf", []string{"pdf"}, false},
		{"tool.bat. . .", "tool.bat", []string{"bat"}, false},
		{"invoice\u202Efdp.exe", "invoicefdp.exe", []string{"exe"}, true},
		{"photo\u200B.\uFF4A\uFF53", "photo.js", []string{"js"}, false},
		{`..\..\Windows\evil.EXE`, "evil.exe", []string{"exe"}, false},
		{"dir/sub/a.tar.gz", "a.tar.gz", []string{"tar", "gz"}, false},
		{"scan.pdf      .vbs", "scan.pdf      .vbs", []string{"pdf", "vbs"}, false},
		{"report\u00A0final.doc", "report final.doc", []string{"doc"}, false},
		{"noext", "noext", nil, false},
	}
	for _, tc := range tests {
		n := NormalizeName(tc.raw)
		if n.Norm != tc.norm || !reflect.DeepEqual(n.Exts, tc.exts) || n.Bidi != tc.bidi {
			t.Errorf("NormalizeName(%q) = %q %q bidi=%v, want %q %q bidi=%v", tc.raw, n.Norm, n.Exts, n.Bidi, tc.norm, tc.exts, tc.bidi)
		}
	}
}

func TestRawNames(t *testing.T) {
	tests := []struct {
		header string
		want   []string
	}{
		{`attachment; filename="a.txt"`, []string{"a.txt"}},
		{`attachment; filename*=UTF-8''%E2%82%AC.exe`, []string{"€.exe"}},
		{`attachment; filename*0*=utf-8''%C3%BC; filename*1="ber.js"`, []string{"über.js"}},
		{`attachment; filename*1="b.exe"; filename*0="a"`, []string{"ab.exe"}},
		{`attachment; filename*=iso-8859-1'de'%FC.hta`, []string{"ü.hta"}},
		{`attachment; filename*=windows-1251''%E0.scr`, []string{"а.scr"}},
		{`attachment; filename="=?UTF-8?Q?r=C3=A9sum=C3=A9.js?="`, []string{"=?UTF-8?Q?r=C3=A9sum=C3=A9.js?=", "résumé.js"}},
		{`attachment; filename="=?koi8-r?B?wcLX?=.vbs"`, []string{"=?koi8-r?B?wcLX?=.vbs", "абв.vbs"}},
		{`attachment; filename="x.ex%65"`, []string{"x.ex%65", "x.exe"}},
		{`attachment; filename="a.txt"; filename="b.exe"`, []string{"a.txt", "b.exe"}},
		{`attachment; filename=unquoted name.pif ; size=3`, []string{"unquoted name.pif"}},
		{`attachment; filename="esc\"aped.exe"`, []string{`esc"aped.exe`}},
		{`attachment; filename="unterminated.exe`, []string{"unterminated.exe"}},
		{`attachment; filename*=utf-8'broken`, []string{"utf-8'broken"}},
	}
	for _, tc := range tests {
		e := &Entity{}
		e.Disposition, e.DispParams = parseParams(tc.header)
		if got := rawNames(e); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("rawNames(%s) = %q, want %q", tc.header, got, tc.want)
		}
	}
}

func TestEscapeName(t *testing.T) {
	if got, want := escapeName("a\u202E\"b\\c\r.exe"), `a\u202e\"b\\c\u000d.exe`; got != want {
		t.Fatalf("escapeName = %q, want %q", got, want)
	}
	if got := token("a b:c/é"); got != "a%20b%3Ac/%C3%A9" {
		t.Fatalf("token = %q", got)
	}
}
