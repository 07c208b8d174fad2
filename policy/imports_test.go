package policy_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/moatmail/moat"

// pkgInfo is one package of the module as `go list` sees it (tests left out).
type pkgInfo struct {
	path    string   // relative to the module: "rules/relay"
	imports []string // the module's packages it imports directly, relative
	deps    []string // the module's packages it depends on, directly or not, relative
	isCheck bool     // it registers a check (policy.Register in its Go files)
}

// listPackages runs `go list` over the module (from its root, one level up).
func listPackages(t *testing.T) map[string]*pkgInfo {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "list", "-tags", "moattest", "-f",
		`{{.ImportPath}}|{{join .Imports " "}}|{{join .Deps " "}}|{{.Dir}}|{{join .GoFiles " "}}`, "./...")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	own := func(list string) []string {
		var rel []string
		for _, p := range strings.Fields(list) {
			if r, ok := strings.CutPrefix(p, module+"/"); ok {
				rel = append(rel, r)
			}
		}
		return rel
	}
	pkgs := map[string]*pkgInfo{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "|")
		if len(f) != 5 {
			t.Fatalf("go list line %q", sc.Text())
		}
		rel, ok := strings.CutPrefix(f[0], module+"/")
		if !ok {
			continue // the module root has no package
		}
		p := &pkgInfo{path: rel, imports: own(f[1]), deps: own(f[2])}
		for _, name := range strings.Fields(f[4]) {
			src, err := os.ReadFile(filepath.Join(f[3], name))
			if err != nil {
				t.Fatal(err)
			}
			p.isCheck = p.isCheck || bytes.Contains(src, []byte("policy.Register("))
		}
		pkgs[rel] = p
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

func inTree(path string, roots ...string) bool {
	for _, r := range roots {
		if path == r || strings.HasPrefix(path, r+"/") {
			return true
		}
	}
	return false
}

// TestImportGraph keeps the layers apart: cmd -> milter -> policy -> checks -> internal, with the services
// (store, auth/resolver) and config below policy.
//
//   - no check (a package under rules/, auth/ or scanners/ that registers itself) imports another check;
//     what two checks share lives below them (internal/, scanners/servers);
//   - nothing below policy (internal/, config, store, auth/resolver, policy/action) depends on policy, directly
//     or not, so that checks and policy build on them and not the other way round;
//   - only cmd/ and the end-to-end tests (test/) import the milter; nothing outside cmd/ imports cmd/.
func TestImportGraph(t *testing.T) {
	pkgs := listPackages(t)
	checks := 0
	for _, p := range pkgs {
		if p.isCheck && inTree(p.path, "rules", "auth", "scanners") {
			checks++
			for _, imp := range p.imports {
				if q := pkgs[imp]; q != nil && q.isCheck {
					t.Errorf("check %s imports check %s: move what they share below them (internal/)", p.path, imp)
				}
			}
		}
		if inTree(p.path, "internal", "config", "store", "auth/resolver", "policy/action") {
			for _, dep := range p.deps {
				if dep == "policy" {
					t.Errorf("%s sits below policy but depends on it", p.path)
				}
			}
		}
		for _, imp := range p.imports {
			if inTree(imp, "cmd") && !inTree(p.path, "cmd") {
				t.Errorf("%s imports %s: nothing outside cmd/ may", p.path, imp)
			}
			if imp == "milter" && !inTree(p.path, "cmd", "test") {
				t.Errorf("%s imports the milter: checks and policy know nothing of the protocol", p.path)
			}
		}
	}
	if checks < 10 {
		t.Errorf("found %d check packages; the test no longer recognises them", checks)
	}
}
