// Package policytest has helpers for tests of checks: it builds an engine from configuration text with the
// services cmd/moat gives (or a resolver of the test's own), holds a message in memory, splits a header block as the milter hands it over, picks the headers an outcome adds,
// and builds an engine from a check's example.toml.
//
// # Configuration text
//
// [Parse], [Engine] and [BuildError] read the text as if from a file named "moat.toml", so errors read
// "moat.toml:LINE: KEY: …". Most tests start the text with [Policy], which fixes the authserv-id that
// Authentication-Results and the trace header name, so that they do not depend on the host name.
//
// # Services
//
// The engines get the services moat's composition root gives them ([Services]: the resolver from [dns], the
// store from [store]). A DNS test either writes a [dns] table (dnstest's Server.Table) or hands a resolver
// over with [WithResolver], e.g. EngineWith(t, text, WithResolver(Resolver(t, srv.Addr, time.Second))).
package policytest

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/store"
)

// FileName is the name configuration text is parsed under.
const FileName = "moat.toml"

// Policy is a [policy] table that sets authserv_id = "mx.test". It is two lines long and leaves the table
// open, so that a test can add [policy] keys right after it.
const Policy = "[policy]\nauthserv_id = \"mx.test\"\n"

// Parse parses text as the configuration file moat.toml; a syntax error fails the test.
func Parse(t testing.TB, text string) *config.File {
	t.Helper()
	f, err := config.Parse(FileName, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Services are the services cmd/moat hands to policy.Build: the DNS resolver built from [dns], the state
// store opened from [store].
func Services() policy.Services {
	return policy.Services{
		Tables:   []string{resolver.Table, store.Table},
		Resolver: resolver.FromConfig,
		Store:    store.FromConfig,
	}
}

// WithResolver returns [Services] whose DNS resolver is r, whatever the configuration's [dns] table says.
func WithResolver(r *resolver.Resolver) policy.Services {
	svc := Services()
	svc.Resolver = func(*config.File) (*resolver.Resolver, error) { return r, nil }
	return svc
}

// Resolver returns a resolver that asks only the DNS server at addr (a dnstest server), each query once
// with the given timeout, with the default cache.
func Resolver(t testing.TB, addr string, timeout time.Duration) *resolver.Resolver {
	t.Helper()
	cfg := resolver.DefaultConfig()
	cfg.Servers = []string{addr}
	cfg.Timeout = config.Duration(timeout)
	cfg.Retries = 0
	r, err := resolver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Engine builds an engine from the configuration text with the default logger and [Services]; any error
// fails the test. The engine is retired when the test ends, which closes what its checks hold open (stores,
// pools).
func Engine(t testing.TB, text string) *policy.Engine {
	t.Helper()
	return EngineWith(t, text, Services())
}

// EngineWith is [Engine] with the services svc.
func EngineWith(t testing.TB, text string, svc policy.Services) *policy.Engine {
	t.Helper()
	e, err := policy.Build(Parse(t, text), nil, svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Retire)
	return e
}

// BuildError returns the error policy.Build gives for the configuration text (nil when it builds), for tests
// of configuration errors. A syntax error fails the test: it would hide the error under test.
func BuildError(t testing.TB, text string) error {
	t.Helper()
	e, err := policy.Build(Parse(t, text), nil, Services())
	if err == nil {
		e.Retire()
	}
	return err
}

// Msg is a message held in memory; it implements policy.Message.
type Msg []byte

// Open implements policy.Message.
func (m Msg) Open() io.Reader { return bytes.NewReader(m) }

// Size implements policy.Message.
func (m Msg) Size() int64 { return int64(len(m)) }

// Headers splits the header block of m (CRLF line ends) as the milter hands it over: each field's name, and
// its raw value after the colon, with continuation lines kept. It is policy.ParseHeaderBlock, the parser
// `moat scan` uses, so a test sees the fields a scan would; it returns nil for a header line longer than the
// parser takes (4 MiB).
func Headers(m []byte) []policy.Header {
	hs, _, err := policy.ParseHeaderBlock(m)
	if err != nil {
		return nil
	}
	return hs
}

// AuthResults returns the value of the Authentication-Results field that the engine inserts into an accepted
// message, "" when there is none.
func AuthResults(out policy.Outcome) string {
	for _, h := range out.InsertHeaders {
		if h.Name == "Authentication-Results" {
			return h.Value
		}
	}
	return ""
}

// AddedHeaders returns the values of the fields named name (in any case) that out appends to the header
// block, in order.
func AddedHeaders(out policy.Outcome, name string) []string {
	var vs []string
	for _, h := range out.AddHeaders {
		if strings.EqualFold(h.Name, name) {
			vs = append(vs, h.Value)
		}
	}
	return vs
}

// etcPath matches the paths of list and key files in the examples.
var etcPath = regexp.MustCompile(`/etc/moat/[^"'\s]+`)

// ExampleEngine builds an engine from the example configuration at path (a check's example.toml, the snippet
// for moat.example.toml), so that the example cannot rot. Every /etc/moat/… path in it, commented out or not,
// is replaced by a temporary file with the content that files gives for the path's base name; a path that
// files does not know fails the test. The example is read as it stands, under its own name, so errors give
// its lines. The test fails unless the engine's enabled checks are exactly wantChecks, in run order.
func ExampleEngine(t testing.TB, path string, files map[string]string, wantChecks ...string) *policy.Engine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	text := etcPath.ReplaceAllStringFunc(string(data), func(p string) string {
		name := filepath.Base(p)
		content, ok := files[name]
		if !ok {
			t.Fatalf("%s names %s, which the test does not know", path, p)
		}
		out := filepath.Join(dir, name)
		if err := os.WriteFile(out, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return out
	})
	f, err := config.Parse(path, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.Build(f, nil, Services())
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Checks(); !slices.Equal(got, wantChecks) {
		t.Errorf("checks %v, want %v", got, wantChecks)
	}
	return e
}
