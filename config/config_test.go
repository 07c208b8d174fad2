package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name  string         `toml:"name"`
	Count int            `toml:"count"`
	Ratio float64        `toml:"ratio"`
	On    bool           `toml:"on"`
	Wait  Duration       `toml:"wait"`
	List  []string       `toml:"list"`
	Map   map[string]int `toml:"map"`
	Lists []struct {
		Zone string `toml:"zone"`
	} `toml:"lists"`
	Sub struct {
		Deep string `toml:"deep"`
	} `toml:"sub"`
}

func TestDecode(t *testing.T) {
	f, err := Parse("t.toml", []byte(`
[a]
name = "x"
count = 3
ratio = 2
on = true
wait = "35d"
list = ["p", "q"]
map = { one = 1 }
sub = { deep = "yes" }

[[a.lists]]
zone = "z1"
[[a.lists]]
zone = "z2"
`))
	if err != nil {
		t.Fatal(err)
	}
	var s sample
	s.Count = 99
	if err := f.Section("a").Decode(&s); err != nil {
		t.Fatal(err)
	}
	if s.Name != "x" || s.Count != 3 || s.Ratio != 2 || !s.On || s.Wait.D() != 35*24*time.Hour ||
		len(s.List) != 2 || s.Map["one"] != 1 || len(s.Lists) != 2 || s.Lists[1].Zone != "z2" || s.Sub.Deep != "yes" {
		t.Errorf("decoded %+v", s)
	}
}

func TestDecodeErrorsAreLocated(t *testing.T) {
	doc := "[a]\nname = \"x\"\n\n[[a.lists]]\nzone = \"z1\"\n[[a.lists]]\nzonee = \"z2\"\n"
	f, err := Parse("t.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var s sample
	err = f.Section("a").Decode(&s)
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 7 || ce.Key != "a.lists[1].zonee" {
		t.Fatalf("got %v (%+v)", err, ce)
	}
	if got := f.Section("a").Errorf("name", "bad %s", "name").Error(); got != "t.toml:2: a.name: bad name" {
		t.Errorf("Errorf: %q", got)
	}
	if got := f.Section("nope").Errorf("key", "missing").Error(); got != "t.toml: nope.key: missing" {
		t.Errorf("Errorf on an absent section: %q", got)
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "5m": 5 * time.Minute, "2d": 48 * time.Hour, "0.5d": 12 * time.Hour} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "soon", "-5m", "xd", "-1d"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
}

func TestLists(t *testing.T) {
	p := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(p, []byte("# comment\n\nalpha@example.com\n  beta@example.com # trailing\n\tgamma\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := Parse("t.toml", []byte("[c]\ninline = [\"one\", \"# not an entry\"]\nfile = \""+p+"\"\n"))
	sec := f.Section("c")
	lines, err := sec.List("inline", []string{"one", "# not an entry"}, "file", p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lines {
		got = append(got, l.Text)
	}
	if strings.Join(got, ",") != "one,alpha@example.com,beta@example.com,gamma" {
		t.Errorf("entries %v", got)
	}
	if lines[1].Line != 3 || lines[1].Source != p || lines[0].Line != 2 || lines[0].Source != "t.toml" {
		t.Errorf("positions %+v", lines)
	}
	if err := lines[2].Errorf("bad"); !strings.Contains(err.Error(), p+":4:") {
		t.Errorf("ListLine.Errorf: %v", err)
	}
	if _, err := sec.List("inline", nil, "file", "/nonexistent/list"); err == nil || !strings.Contains(err.Error(), "t.toml:3: c.file:") {
		t.Errorf("missing list file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"[a]\nb = 1\n", "[[x]]\ny = \"z\"\n", "a = [1, 2]\n", "[a.b]\nc = { d = 1 }\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		file, err := Parse("f.toml", []byte(doc))
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("parse error of type %T", err)
			}
			return
		}
		for _, k := range file.TopKeys() {
			var s sample
			_ = file.Section(k).Decode(&s)
		}
	})
}

func TestAbsIsRelativeToTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "list"), []byte("entry\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Parse(filepath.Join(dir, "moat.toml"), []byte("[c]\nfile = \"list\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Abs("list"); got != filepath.Join(dir, "list") {
		t.Errorf("Abs = %q", got)
	}
	if got := f.Abs("/etc/x"); got != "/etc/x" {
		t.Errorf("Abs of an absolute path = %q", got)
	}
	lines, err := f.Section("c").List("inline", nil, "file", "list")
	if err != nil || len(lines) != 1 || lines[0].Text != "entry" {
		t.Errorf("relative list file: %v %v", lines, err)
	}
}

// TestLocate: a *KeyError from code that validates without the file becomes an *Error at its key and line;
// an *Error stays as it is; any other error is placed at the table.
func TestLocate(t *testing.T) {
	f, err := Parse("t.toml", []byte("[dns]\n\ntimeout = \"0s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	sec := f.Section("dns")
	var ce *Error
	err = sec.Locate(fmt.Errorf("building: %w", KeyErrorf("timeout", "must be positive")))
	if !errors.As(err, &ce) || ce.File != "t.toml" || ce.Line != 3 || ce.Key != "dns.timeout" || ce.Msg != "must be positive" {
		t.Fatalf("Locate(KeyError) = %#v", err)
	}
	orig := sec.Errorf("servers", "x")
	if got := sec.Locate(orig); got != orig {
		t.Errorf("Locate(*Error) = %v, want it unchanged", got)
	}
	if err := sec.Locate(errors.New("plain")); !errors.As(err, &ce) || ce.Key != "dns" || ce.Line != 1 {
		t.Errorf("Locate(plain) = %#v, want it at the table", err)
	}
	if sec.Locate(nil) != nil {
		t.Error("Locate(nil) != nil")
	}
}
