package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestSQLiteKnownPassRefresh: a pass of a known triplet rewrites its record at most once per greyRefresh,
// and still answers known every time.
func TestSQLiteKnownPassRefresh(t *testing.T) {
	ctx := context.Background()
	st, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "moat.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := req("192.0.2.0/24", "alice@example.com", "bob@example.org", t0)
	expectOutcome(t, st, r, GreyNew)
	r.Now = t0.Add(5 * time.Minute)
	expectOutcome(t, st, r, GreyFirstPass)
	passedAt := r.Now
	lastSeen := func() time.Time {
		e, err := st.GreyEntry(ctx, r.ID(), r.Now)
		if err != nil {
			t.Fatal(err)
		}
		return e.LastSeen
	}
	r.Now = passedAt.Add(time.Minute)
	expectOutcome(t, st, r, GreyKnown)
	if got := lastSeen(); !got.Equal(passedAt) {
		t.Fatalf("a known pass 1m after the last write rewrote the record: last_seen %v, want %v", got, passedAt)
	}
	r.Now = passedAt.Add(greyRefresh)
	expectOutcome(t, st, r, GreyKnown)
	if got := lastSeen(); !got.Equal(r.Now) {
		t.Fatalf("a known pass %v after the last write did not refresh the record: last_seen %v, want %v", greyRefresh, got, r.Now)
	}
	// A pass from a new IP address is written at once (the record shows the latest client).
	r.Now, r.IP = r.Now.Add(time.Second), "192.0.2.99"
	expectOutcome(t, st, r, GreyKnown)
	if e, _ := st.GreyEntry(ctx, r.ID(), r.Now); e.IP != "192.0.2.99" {
		t.Fatalf("a pass from a new address was not recorded: ip %q", e.IP)
	}
}
