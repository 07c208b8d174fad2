package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/moatmail/moat/policy"
)

// repoRoot is the repository's root, seen from this package's directory (where go test runs).
const repoRoot = "../.."

// exampleKeys is what one example file says about its tables: the keys it sets (dotted paths below the
// file's root, e.g. "checks.relay.local_domains", whole arrays as one value) and the keys it documents in a
// comment ("# key = value", its table being the section header above it, commented or not).
type exampleKeys struct {
	set       map[string]any
	commented map[string]string
}

var (
	headerLine    = regexp.MustCompile(`^#?\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$`)
	commentedLine = regexp.MustCompile(`^#\s*([A-Za-z0-9_]+)\s*=\s*(.+)$`)
)

func readExample(t *testing.T, path string) exampleKeys {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	ex := exampleKeys{set: map[string]any{}, commented: map[string]string{}}
	flatten("", doc, ex.set)
	table := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if m := headerLine.FindStringSubmatch(line); m != nil && !strings.Contains(m[1], "=") {
			table = m[1]
			continue
		}
		if m := commentedLine.FindStringSubmatch(line); m != nil {
			ex.commented[table+"."+m[1]] = canonicalValue(m[2])
		}
	}
	return ex
}

// flatten records the leaves of the table m under prefix; arrays (of values or of tables) are one leaf.
func flatten(prefix string, m map[string]any, out map[string]any) {
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok {
			flatten(key, sub, out)
			continue
		}
		out[key] = v
	}
}

// canonicalValue turns the value of a commented-out line into a comparable form: the TOML value when it
// parses (so that spacing and a trailing comment do not matter), else the text.
func canonicalValue(s string) string {
	var v map[string]any
	if err := toml.Unmarshal([]byte("v = "+s), &v); err == nil {
		return fmt.Sprintf("%#v", v["v"])
	}
	return strings.Join(strings.Fields(s), " ")
}

// under reports whether the dotted key is the table or below it.
func under(key, table string) bool { return key == table || strings.HasPrefix(key, table+".") }

// TestExamplesAgree: moat.example.toml documents every check and shared service as its package's
// example.toml does. For every registered check and every table of the services cmd/moat builds, exactly one
// package's example.toml has the table, and the keys agree (compareTable). moat.example.toml has no table
// for a check or service that does not exist.
func TestExamplesAgree(t *testing.T) {
	var examples []string
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && p != repoRoot {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "example.toml" {
			examples = append(examples, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(examples)
	main := readExample(t, filepath.Join(repoRoot, "moat.example.toml"))

	var tables []string // the tables a package owns: [checks.NAME] of each check, each service's table
	for _, name := range policy.Registered() {
		if name != "test" { // the scripted check of the end-to-end tests: not part of moat
			tables = append(tables, "checks."+name)
		}
	}
	tables = append(tables, services().Tables...)

	for _, table := range tables {
		var owners []string
		var ex exampleKeys
		for _, p := range examples {
			e := readExample(t, p)
			if hasTable(e, table) {
				owners, ex = append(owners, p), e
			}
		}
		if len(owners) != 1 {
			t.Errorf("[%s]: want exactly one package example.toml with the table, found %v", table, owners)
			continue
		}
		if !hasTable(main, table) {
			t.Errorf("moat.example.toml has no [%s] table (%s has)", table, owners[0])
			continue
		}
		compareTable(t, table, owners[0], ex, main)
	}

	for key := range main.set {
		if !slices.ContainsFunc(tables, func(tb string) bool { return under(key, tb) }) &&
			!slices.ContainsFunc([]string{"milter", "log", "policy"}, func(tb string) bool { return under(key, tb) }) {
			t.Errorf("moat.example.toml sets %s, which belongs to no check or service", key)
		}
	}
	for key := range main.commented {
		if strings.HasPrefix(key, "checks.") && !slices.ContainsFunc(tables, func(tb string) bool { return under(key, tb) }) {
			t.Errorf("moat.example.toml documents %s, which belongs to no check", key)
		}
	}
}

func hasTable(e exampleKeys, table string) bool {
	for k := range e.set {
		if under(k, table) {
			return true
		}
	}
	for k := range e.commented {
		if under(k, table) {
			return true
		}
	}
	return false
}

// compareTable asserts that the keys of table agree between the package example (at path) and
// moat.example.toml: each key documented in one (set, or shown in a comment) is documented in the other with
// the same value. Whether a key is set or only shown may differ: moat.example.toml is what `make run` runs on
// a machine without /etc/moat, so it sets inline lists where a package example sets the list file, and it
// may turn off (enabled = false) a check that needs a daemon.
func compareTable(t *testing.T, table, path string, ex, main exampleKeys) {
	t.Helper()
	pkg, top := ex.documented(table), main.documented(table)
	for key, v := range pkg {
		if mv, ok := top[key]; !ok || !slices.Equal(v, mv) {
			t.Errorf("%s documents %s = %v; moat.example.toml: %v", path, key, v, mv)
		}
	}
	for key, v := range top {
		if key == table+".enabled" && slices.Equal(v, []string{"false"}) {
			continue
		}
		if _, ok := pkg[key]; !ok {
			t.Errorf("moat.example.toml documents %s = %v; %s does not", key, v, path)
		}
	}
}

// documented returns, for every key below table, the values the file gives it (set or in a comment), sorted.
func (e exampleKeys) documented(table string) map[string][]string {
	out := map[string][]string{}
	for k, v := range e.set {
		if under(k, table) {
			out[k] = append(out[k], fmt.Sprintf("%#v", v))
		}
	}
	for k, v := range e.commented {
		if under(k, table) && !slices.Contains(out[k], v) {
			out[k] = append(out[k], v)
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}
