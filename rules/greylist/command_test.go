package greylist

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/store"
)

func TestCommand(t *testing.T) {
	clk := &fakeClock{now: start}
	clock = clk.Now
	defer func() { clock = time.Now }()
	path := filepath.Join(t.TempDir(), "cli.db")
	f, err := config.Parse("t.toml", []byte(fmt.Sprintf("[store]\npath = %q\n[checks.greylist]\nauto_whitelist = 3\n", path)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := DecodeConfig(f.Section("checks.greylist"))
	st, err := store.OpenSQLite(context.Background(), path, false)
	if err != nil {
		t.Fatal(err)
	}
	c := New(cfg, st, nil, clk.Now)
	wantGreylisted(t, rcpt(t, c, session(t, alice), "pending@example.org"), 300)
	wantGreylisted(t, rcpt(t, c, session(t, sess{ip: "2001:db8::1", helo: "v6.example.net", from: "bob@example.net"}), "other@example.org"), 300)
	clk.Advance(time.Minute)
	wantGreylisted(t, rcpt(t, c, session(t, alice), "passed@example.org"), 300)
	clk.Advance(10 * time.Minute)
	wantPass(t, rcpt(t, c, session(t, alice), "passed@example.org"), ReasonPassed)
	st.Close() // the command opens the database itself, as `moat greylist` does while moat serves

	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := Command(context.Background(), f, func(ctx context.Context) (store.Store, error) { return store.Load(ctx, f) }, args, &out)
		return out.String(), err
	}
	out, err := run("list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "pending@example.org") ||
		!strings.Contains(lines[2], "2001:db8::/64") || !strings.Contains(lines[3], "passed@example.org") {
		t.Fatalf("list:\n%s", out)
	}
	out, err = run("list", "-state", "pending", "-to", "PENDING@")
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, "pending@example.org") {
		t.Fatalf("filtered list: %v\n%s", err, out)
	}
	out, err = run("list", "-json", "-state", "passed")
	if err != nil {
		t.Fatal(err)
	}
	var je jsonEntry
	if err := json.Unmarshal([]byte(out), &je); err != nil || je.Rcpt != "passed@example.org" || je.State != "passed" || je.Passes != 1 {
		t.Fatalf("json list: %v %+v\n%s", err, je, out)
	}

	id := store.Triplet{Client: "192.0.2.0/24", Sender: "alice@example.com", Rcpt: "pending@example.org"}.ID()
	out, err = run("show", id[:8])
	if err != nil || !strings.Contains(out, "state:      pending") || !strings.Contains(out, "recipient:  pending@example.org") ||
		!strings.Contains(out, "client-passes: 1 of 3") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	out, err = run("release", id)
	if err != nil || !strings.HasPrefix(out, "released "+id) {
		t.Fatalf("release: %v\n%s", err, out)
	}
	if _, err := run("release", id); err == nil || !strings.Contains(err.Error(), "already passed") {
		t.Fatalf("second release: %v", err)
	}
	// The sender's next retry goes through at once, with its real delay in the header.
	st, err = store.OpenSQLite(context.Background(), path, false)
	if err != nil {
		t.Fatal(err)
	}
	c = New(cfg, st, nil, clk.Now)
	fnd := rcpt(t, c, session(t, alice), "pending@example.org")
	wantPass(t, fnd, ReasonPassed)
	if len(fnd.AddHeaders) != 1 || !strings.HasPrefix(fnd.AddHeaders[0].Value, " delayed 660 seconds") {
		t.Fatalf("after release: %+v", fnd.AddHeaders)
	}
	st.Close()

	// Three days later the untouched pending entry has expired: purge removes it.
	clk.Advance(72 * time.Hour)
	out, err = run("purge")
	if err != nil || out != "purged 1 expired entries\n" {
		t.Fatalf("purge: %v %q", err, out)
	}
	if out, _ := run("list"); strings.Count(out, "\n") != 3 {
		t.Fatalf("list after purge:\n%s", out)
	}

	for _, bad := range [][]string{{}, {"frobnicate"}, {"show"}, {"list", "-state", "odd"}, {"show", "ab"}} {
		if _, err := run(bad...); !errors.Is(err, ErrUsage) {
			t.Errorf("%q: err %v, want ErrUsage", bad, err)
		}
	}
	if _, err := run("show", "ffffffff"); err == nil || !strings.Contains(err.Error(), "no live entry") {
		t.Errorf("show unknown: %v", err)
	}
}
