package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/moatmail/moat/test/stack"
)

// The correspondents suite runs on both backends.
func runCorrespondentsSuite(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	lookup := func(t *testing.T, cs Correspondents, user string, keys []string, now time.Time) string {
		t.Helper()
		hit, err := cs.LookupCorrespondents(ctx, user, keys, now)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(hit)
	}
	t.Run("RecordLookupExpiry", func(t *testing.T) {
		cs, err := CorrespondentsOf(open(t))
		if err != nil {
			t.Fatal(err)
		}
		rec := CorrRecord{User: "u1", Keys: []string{"a1", "d1"}, Now: t0, Expiry: time.Hour, Max: 10}
		if err := cs.RecordCorrespondents(ctx, []CorrRecord{rec, {User: "u2", Keys: []string{"a2"}, Now: t0, Expiry: time.Hour}}); err != nil {
			t.Fatal(err)
		}
		if got := lookup(t, cs, "u1", []string{"a1", "a2", "d1"}, t0.Add(time.Minute)); got != "[true false true]" {
			t.Fatalf("u1 lookup = %s", got)
		}
		if got := lookup(t, cs, "u2", []string{"a1", "a2"}, t0); got != "[false true]" {
			t.Fatalf("u2 lookup = %s", got)
		}
		// Expired after an hour; writing again (refresh on use) pushes the expiry forward.
		if got := lookup(t, cs, "u1", []string{"a1"}, t0.Add(time.Hour)); got != "[false]" {
			t.Fatalf("after expiry: %s", got)
		}
		rec.Now, rec.Keys = t0.Add(50*time.Minute), []string{"a1"}
		if err := cs.RecordCorrespondents(ctx, []CorrRecord{rec}); err != nil {
			t.Fatal(err)
		}
		if got := lookup(t, cs, "u1", []string{"a1", "d1"}, t0.Add(90*time.Minute)); got != "[true false]" {
			t.Fatalf("after refresh: %s", got)
		}
		es, err := cs.CorrespondentEntries(ctx, "u1", t0.Add(90*time.Minute))
		if err != nil || len(es) != 1 || es[0].Key != "a1" || !es[0].Expires.Equal(t0.Add(110*time.Minute)) {
			t.Fatalf("entries = %+v, %v", es, err)
		}
	})
	t.Run("Bound", func(t *testing.T) {
		cs, _ := CorrespondentsOf(open(t))
		// Five keys one minute apart into a bound of three: the two written first go.
		for i := 0; i < 5; i++ {
			rec := CorrRecord{User: "u", Keys: []string{fmt.Sprintf("k%d", i)}, Now: t0.Add(time.Duration(i) * time.Minute), Expiry: time.Hour, Max: 3}
			if err := cs.RecordCorrespondents(ctx, []CorrRecord{rec}); err != nil {
				t.Fatal(err)
			}
		}
		if got := lookup(t, cs, "u", []string{"k0", "k1", "k2", "k3", "k4"}, t0.Add(5*time.Minute)); got != "[false false true true true]" {
			t.Fatalf("bounded lookup = %s", got)
		}
		// One record of many keys is bounded too.
		var many []string
		for i := 0; i < 50; i++ {
			many = append(many, fmt.Sprintf("m%02d", i))
		}
		if err := cs.RecordCorrespondents(ctx, []CorrRecord{{User: "blast", Keys: many, Now: t0, Expiry: time.Hour, Max: 3}}); err != nil {
			t.Fatal(err)
		}
		es, err := cs.CorrespondentEntries(ctx, "blast", t0)
		if err != nil || len(es) != 3 {
			t.Fatalf("blast kept %d entries (%v), want 3", len(es), err)
		}
	})
	t.Run("Forget", func(t *testing.T) {
		cs, _ := CorrespondentsOf(open(t))
		rec := CorrRecord{User: "u", Keys: []string{"a", "b", "c"}, Now: t0, Expiry: time.Hour}
		if err := cs.RecordCorrespondents(ctx, []CorrRecord{rec, {User: "v", Keys: []string{"a"}, Now: t0, Expiry: time.Hour}}); err != nil {
			t.Fatal(err)
		}
		if n, err := cs.ForgetCorrespondents(ctx, "u", []string{"b", "zz"}); err != nil || n != 1 {
			t.Fatalf("forget b: %d, %v", n, err)
		}
		if got := lookup(t, cs, "u", []string{"a", "b", "c"}, t0); got != "[true false true]" {
			t.Fatalf("after forget b: %s", got)
		}
		if n, err := cs.ForgetCorrespondents(ctx, "u", nil); err != nil || n != 2 {
			t.Fatalf("forget all: %d, %v", n, err)
		}
		if got := lookup(t, cs, "u", []string{"a", "c"}, t0); got != "[false false]" {
			t.Fatalf("after forget all: %s", got)
		}
		if got := lookup(t, cs, "v", []string{"a"}, t0); got != "[true]" {
			t.Fatalf("another user's key went too: %s", got)
		}
	})
}

func TestCorrespondentsSQLite(t *testing.T) {
	runCorrespondentsSuite(t, openSQLite)
	// Purge deletes expired rows of users that never write again.
	st := openSQLite(t)
	cs, _ := CorrespondentsOf(st)
	if err := cs.RecordCorrespondents(context.Background(), []CorrRecord{{User: "u", Keys: []string{"a", "b"}, Now: t0, Expiry: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	n, err := st.Purge(context.Background(), t0.Add(2*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("purge: %d, %v; want 2", n, err)
	}
}

func TestCorrespondentsRedis(t *testing.T) {
	srv := stack.StartRedis(t)
	runCorrespondentsSuite(t, func(t *testing.T) Store {
		cfg := DefaultConfig()
		cfg.Backend, cfg.RedisAddr, cfg.RedisPrefix = "redis", srv.Addr, randomPrefix()
		st := OpenRedis(cfg)
		t.Cleanup(func() { st.Close() })
		return st
	})
}
