package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// runLearnedSuite is the learned white list's part of the store suite: both backends run it.
func runLearnedSuite(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	t.Run("LearnedSenders", func(t *testing.T) {
		st := open(t)
		if ok, err := st.LearnedSender(ctx, "friend@example.com", t0); ok || err != nil {
			t.Fatalf("unknown sender: %v, %v", ok, err)
		}
		if err := st.LearnSender(ctx, "<Friend@Example.COM>", "operator@moat.test", t0, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			sender string
			at     time.Duration
			want   bool
		}{
			{"friend@example.com", 0, true},
			{"FRIEND@example.com", 23 * time.Hour, true},  // case-blind
			{"friend@example.com", 24 * time.Hour, false}, // expired
			{"other@example.com", 0, false},
			{"", 0, false}, // the null sender is never learned
		} {
			if ok, err := st.LearnedSender(ctx, tc.sender, t0.Add(tc.at)); ok != tc.want || err != nil {
				t.Errorf("LearnedSender(%q, +%v) = %v, %v; want %v", tc.sender, tc.at, ok, err, tc.want)
			}
		}
		// Learning again moves the expiry; the default TTL is DefaultLearnedTTL.
		if err := st.LearnSender(ctx, "friend@example.com", "op", t0.Add(20*time.Hour), 0); err != nil {
			t.Fatal(err)
		}
		if ok, _ := st.LearnedSender(ctx, "friend@example.com", t0.Add(20*time.Hour+DefaultLearnedTTL-time.Minute)); !ok {
			t.Fatal("relearned sender expired before DefaultLearnedTTL")
		}
		if err := st.ForgetSender(ctx, "Friend@example.com"); err != nil {
			t.Fatal(err)
		}
		if ok, err := st.LearnedSender(ctx, "friend@example.com", t0.Add(21*time.Hour)); ok || err != nil {
			t.Fatalf("forgotten sender: %v, %v", ok, err)
		}
		if err := st.ForgetSender(ctx, "nobody@example.com"); err != nil {
			t.Fatalf("forgetting an unknown sender: %v", err)
		}
		if err := st.LearnSender(ctx, "<>", "op", t0, 0); !errors.Is(err, ErrNoSender) {
			t.Fatalf("learning the null sender: %v, want ErrNoSender", err)
		}
	})
	t.Run("LearnedSendersHashed", func(t *testing.T) {
		st := open(t)
		if err := st.LearnSender(ctx, "secret.sender@hidden.example", "boss@moat.test", t0, time.Hour); err != nil {
			t.Fatal(err)
		}
		stored := storedLearned(t, st)
		if len(stored) == 0 {
			t.Fatal("nothing stored")
		}
		for _, s := range stored {
			for _, clear := range []string{"secret", "hidden", "boss", "moat.test"} {
				if strings.Contains(s, clear) {
					t.Fatalf("the store holds %q in clear: %q", clear, s)
				}
			}
		}
	})
}

// storedLearned returns every stored key and value of the learned white list, as the backend keeps them.
func storedLearned(t *testing.T, st Store) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	switch b := st.(type) {
	case *SQLite:
		rows, err := b.db.QueryContext(ctx, "SELECT key, by FROM learned_senders")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var k, by string
			if err := rows.Scan(&k, &by); err != nil {
				t.Fatal(err)
			}
			out = append(out, k, by)
		}
	case *Redis:
		keys, err := b.rdb.Keys(ctx, b.prefix+"learned:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			v, _ := b.rdb.Get(ctx, k).Result()
			out = append(out, k, v)
		}
	default:
		t.Fatalf("unknown backend %T", st)
	}
	return out
}
