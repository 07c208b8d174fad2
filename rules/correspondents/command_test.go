package correspondents

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/store"
)

// TestCommandForget: forgetting an address deletes its address and domain keys and the Message-IDs sent to
// it, not those sent to others; forgetting a domain leaves the Message-IDs; forgetting all empties both sets.
func TestCommandForget(t *testing.T) {
	db := filepath.Join(t.TempDir(), "moat.db")
	st, err := store.OpenSQLite(context.Background(), db, false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.LocalDomains = []string{"local.test"}
	cs, _ := store.CorrespondentsOf(st)
	c := New(cfg, cs, nil, func() time.Time { return t0 })
	send(t, c, []string{"bob@remote.example", "xavier@other.example"}, "out-1@local.test")
	send(t, c, []string{"bob@remote.example"}, "out-2@local.test")
	c.Close()
	st.Close()
	clock = func() time.Time { return t0 }
	t.Cleanup(func() { clock = time.Now })
	f, err := config.Parse("moat.toml", []byte(fmt.Sprintf("[store]\npath = %q\n[checks.correspondents]\nlocal_domains = [\"local.test\"]\n", db)))
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		open := func(ctx context.Context) (store.Store, error) { return store.Load(ctx, f) }
		if err := Command(context.Background(), f, open, args, &out); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String()
	}
	// alice: bob's and xavier's address and domain (4), three Message-IDs (out-1 twice, out-2 once).
	if out := run("list", "alice@local.test"); !strings.Contains(out, "4 correspondents of alice@local.test, 3 sent Message-IDs") {
		t.Fatalf("list:\n%s", out)
	}
	if out := run("forget", "alice@local.test", "Bob@remote.example"); !strings.Contains(out, "4 keys deleted") {
		t.Fatalf("forget bob (address, domain, two Message-IDs): %s", out)
	}
	out := run("list", "alice@local.test")
	if !strings.Contains(out, "2 correspondents of alice@local.test, 1 sent Message-IDs") ||
		!strings.Contains(out, ReplyKey("out-1@local.test", "xavier@other.example")) {
		t.Fatalf("after forgetting bob, xavier's keys are to stay:\n%s", out)
	}
	if out := run("forget", "alice@local.test", "other.example"); !strings.Contains(out, "1 keys deleted") {
		t.Fatalf("forget a domain: %s", out)
	}
	if out := run("forget", "alice@local.test"); !strings.Contains(out, "2 keys deleted") {
		t.Fatalf("forget all: %s", out)
	}
	if out := run("list", "alice@local.test"); !strings.Contains(out, "0 correspondents of alice@local.test, 0 sent Message-IDs") {
		t.Fatalf("after forgetting all:\n%s", out)
	}
}
