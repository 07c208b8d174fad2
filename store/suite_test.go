package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// The shared store suite: every backend runs exactly these tests (TestSQLite, TestRedis).

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var testParams = GreyParams{
	Delay:                 5 * time.Minute,
	Window:                48 * time.Hour,
	Expiry:                35 * 24 * time.Hour,
	AutoWhitelist:         3,
	AutoWhitelistInterval: time.Hour,
}

func req(client, sender, rcpt string, now time.Time) GreyRequest {
	return GreyRequest{Triplet: Triplet{Client: client, Sender: sender, Rcpt: rcpt}, IP: "192.0.2.7", Helo: "mx.example.com",
		Now: now, Params: testParams}
}

func mustGrey(t *testing.T, st Store, r GreyRequest) GreyResult {
	t.Helper()
	res, err := st.Greylist(context.Background(), r)
	if err != nil {
		t.Fatalf("Greylist(%v at %v): %v", r.Triplet, r.Now, err)
	}
	return res
}

func expectOutcome(t *testing.T, st Store, r GreyRequest, want GreyOutcome) GreyResult {
	t.Helper()
	res := mustGrey(t, st, r)
	if res.Outcome != want {
		t.Fatalf("at +%v: outcome %q, want %q (entry %+v)", r.Now.Sub(t0), res.Outcome, want, res.Entry)
	}
	return res
}

func runSuite(t *testing.T, open func(t *testing.T) Store) {
	runSuiteReview(t, open)
	runLearnedSuite(t, open)
	t.Run("DelayAndWindow", func(t *testing.T) {
		st := open(t)
		r := req("192.0.2.0/24", "alice@example.com", "bob@example.org", t0)
		res := expectOutcome(t, st, r, GreyNew)
		if res.Wait != 5*time.Minute || res.Entry.State != GreyPending || res.Entry.Attempts != 1 {
			t.Fatalf("new: %+v", res)
		}
		r.Now = t0.Add(3 * time.Minute)
		res = expectOutcome(t, st, r, GreyEarly)
		if res.Wait != 2*time.Minute || res.Entry.Attempts != 2 || !res.Entry.FirstSeen.Equal(t0) {
			t.Fatalf("early retry: wait %v attempts %d first %v", res.Wait, res.Entry.Attempts, res.Entry.FirstSeen)
		}
		r.Now = t0.Add(5 * time.Minute) // exactly the delay: passes
		res = expectOutcome(t, st, r, GreyFirstPass)
		if res.Delayed != 5*time.Minute || res.Entry.State != GreyPassed || res.Entry.Passes != 1 {
			t.Fatalf("first pass: %+v", res)
		}
		r.Now = t0.Add(time.Hour)
		if res = expectOutcome(t, st, r, GreyKnown); res.Entry.Passes != 2 {
			t.Fatalf("known: passes %d, want 2", res.Entry.Passes)
		}
		// Another triplet retried after the window is greylisted afresh.
		r2 := req("192.0.2.0/24", "carol@example.com", "bob@example.org", t0)
		expectOutcome(t, st, r2, GreyNew)
		r2.Now = t0.Add(48*time.Hour + time.Second)
		res = expectOutcome(t, st, r2, GreyNew)
		if !res.Entry.FirstSeen.Equal(r2.Now) || res.Entry.Attempts != 1 {
			t.Fatalf("after the window: %+v", res.Entry)
		}
	})

	t.Run("Expiry", func(t *testing.T) {
		st := open(t)
		r := req("198.51.100.0/24", "news@lists.example.com", "bob@example.org", t0)
		r.Params.AutoWhitelist = 0
		expectOutcome(t, st, r, GreyNew)
		r.Now = t0.Add(10 * time.Minute)
		expectOutcome(t, st, r, GreyFirstPass)
		// Traffic keeps it alive: a pass 30 days later and another 30 days after that.
		r.Now = r.Now.Add(30 * 24 * time.Hour)
		expectOutcome(t, st, r, GreyKnown)
		r.Now = r.Now.Add(30 * 24 * time.Hour)
		expectOutcome(t, st, r, GreyKnown)
		// 35 days of silence: forgotten.
		r.Now = r.Now.Add(35 * 24 * time.Hour)
		if _, err := st.GreyEntry(context.Background(), r.ID(), r.Now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GreyEntry after expiry: %v, want ErrNotFound", err)
		}
		expectOutcome(t, st, r, GreyNew)
	})

	t.Run("AutoWhitelist", func(t *testing.T) {
		st := open(t)
		client := "203.0.113.0/24"
		now := t0
		pass := func(rcpt string) GreyResult {
			r := req(client, "billing@shop.example", rcpt, now)
			expectOutcome(t, st, r, GreyNew)
			r.Now = now.Add(6 * time.Minute)
			return expectOutcome(t, st, r, GreyFirstPass)
		}
		// Two passes within the same hour count once.
		if res := pass("a@example.org"); res.ClientCount != 1 {
			t.Fatalf("count after first pass = %d, want 1", res.ClientCount)
		}
		if res := pass("b@example.org"); res.ClientCount != 1 {
			t.Fatalf("count after second pass in the same hour = %d, want 1", res.ClientCount)
		}
		// Known triplets passing again do not count, hours apart or not: N means N different triplets.
		for i := 0; i < 3; i++ {
			now = now.Add(2 * time.Hour)
			r := req(client, "billing@shop.example", "a@example.org", now)
			if res := expectOutcome(t, st, r, GreyKnown); res.ClientCount != 1 {
				t.Fatalf("count after a known pass = %d, want 1", res.ClientCount)
			}
		}
		now = now.Add(2 * time.Hour)
		if res := pass("c@example.org"); res.ClientCount != 2 {
			t.Fatalf("count = %d, want 2", res.ClientCount)
		}
		now = now.Add(2 * time.Hour)
		if res := pass("d@example.org"); res.ClientCount != 3 {
			t.Fatalf("count = %d, want 3", res.ClientCount)
		}
		// Now a new triplet from the client is not greylisted, and no triplet record is made.
		now = now.Add(time.Hour)
		r := req(client, "someone-else@shop.example", "z@example.org", now)
		expectOutcome(t, st, r, GreyWhitelisted)
		if _, err := st.GreyEntry(context.Background(), r.ID(), now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("whitelisted client created a triplet record: %v", err)
		}
		c, err := st.GreyClient(context.Background(), client, now)
		if err != nil || c.Count != 3 {
			t.Fatalf("GreyClient = %+v, %v", c, err)
		}
		// Traffic keeps the client white-listed; silence for the expiry time ends it.
		now = now.Add(34 * 24 * time.Hour)
		r.Now = now
		expectOutcome(t, st, r, GreyWhitelisted)
		now = now.Add(35*24*time.Hour + time.Minute)
		r.Now = now
		expectOutcome(t, st, r, GreyNew)
		// Another client is not affected.
		expectOutcome(t, st, req("203.0.114.0/24", "billing@shop.example", "a@example.org", now), GreyNew)
	})

	t.Run("ReadOnly", func(t *testing.T) {
		st := open(t)
		r := req("192.0.2.0/24", "alice@example.com", "ro@example.org", t0)
		r.ReadOnly = true
		res := expectOutcome(t, st, r, GreyNew)
		if res.Wait != 5*time.Minute {
			t.Fatalf("read-only wait %v", res.Wait)
		}
		expectOutcome(t, st, r, GreyNew) // still new: nothing was written
		if _, err := st.GreyEntry(context.Background(), r.ID(), t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("read-only decision wrote an entry: %v", err)
		}
		r.ReadOnly = false
		expectOutcome(t, st, r, GreyNew)
		r.Now, r.ReadOnly = t0.Add(time.Hour), true
		expectOutcome(t, st, r, GreyFirstPass)
		e, err := st.GreyEntry(context.Background(), r.ID(), r.Now)
		if err != nil || e.State != GreyPending || e.Attempts != 1 {
			t.Fatalf("after a read-only pass the entry is %+v, %v; want pending with 1 attempt", e, err)
		}
		if _, err := st.GreyClient(context.Background(), r.Client, r.Now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("read-only pass counted the client: %v", err)
		}
	})

	t.Run("DeferPass", func(t *testing.T) {
		st := open(t)
		ctx := context.Background()
		r := req("192.0.2.0/24", "alice@example.com", "defer@example.org", t0)
		r.DeferPass = true
		expectOutcome(t, st, r, GreyNew) // refusals are recorded at once
		if e, err := st.GreyEntry(ctx, r.ID(), t0); err != nil || e.State != GreyPending {
			t.Fatalf("deferred new attempt not recorded: %+v, %v", e, err)
		}
		r.Now = t0.Add(time.Minute)
		expectOutcome(t, st, r, GreyEarly)
		r.Now = t0.Add(time.Hour)
		expectOutcome(t, st, r, GreyFirstPass)
		expectOutcome(t, st, r, GreyFirstPass) // not recorded: the message was not accepted yet
		e, err := st.GreyEntry(ctx, r.ID(), r.Now)
		if err != nil || e.State != GreyPending || e.Attempts != 2 {
			t.Fatalf("a deferred pass changed the entry: %+v, %v", e, err)
		}
		if _, err := st.GreyClient(ctx, r.Client, r.Now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a deferred pass counted the client: %v", err)
		}
		// The message is accepted: the same request without DeferPass records the pass.
		r.DeferPass = false
		expectOutcome(t, st, r, GreyFirstPass)
		if e, err := st.GreyEntry(ctx, r.ID(), r.Now); err != nil || e.State != GreyPassed || e.Passes != 1 {
			t.Fatalf("committed pass: %+v, %v", e, err)
		}
		if c, err := st.GreyClient(ctx, r.Client, r.Now); err != nil || c.Count != 1 {
			t.Fatalf("committed pass did not count the client: %+v, %v", c, err)
		}
		// Known triplets: a deferred decision does not count the message either.
		r.Now, r.DeferPass = t0.Add(2*time.Hour), true
		expectOutcome(t, st, r, GreyKnown)
		if e, _ := st.GreyEntry(ctx, r.ID(), r.Now); e.Passes != 1 {
			t.Fatalf("a deferred known pass counted: passes %d", e.Passes)
		}
		// An auto-white-listed client: a deferred decision does not refresh its record.
		for i, rc := range []string{"w1@example.org", "w2@example.org", "w3@example.org"} {
			w := req("198.51.100.0/24", "bob@example.com", rc, t0.Add(time.Duration(i)*2*time.Hour))
			expectOutcome(t, st, w, GreyNew)
			w.Now = w.Now.Add(time.Hour)
			expectOutcome(t, st, w, GreyFirstPass)
		}
		before, err := st.GreyClient(ctx, "198.51.100.0/24", t0.Add(10*time.Hour))
		if err != nil || before.Count != 3 {
			t.Fatalf("client after three passes: %+v, %v", before, err)
		}
		w := req("198.51.100.0/24", "bob@example.com", "w4@example.org", t0.Add(20*time.Hour))
		w.DeferPass = true
		expectOutcome(t, st, w, GreyWhitelisted)
		if after, _ := st.GreyClient(ctx, "198.51.100.0/24", w.Now); !after.LastSeen.Equal(before.LastSeen) {
			t.Fatalf("a deferred white-listed decision touched the client: %v, was %v", after.LastSeen, before.LastSeen)
		}
	})

	t.Run("ReleaseAndList", func(t *testing.T) {
		st := open(t)
		ctx := context.Background()
		a := req("192.0.2.0/24", "alice@example.com", "x@example.org", t0)
		b := req("2001:db8:1:2::/64", "<>@mx.example.net", "y@example.org", t0.Add(time.Second))
		expectOutcome(t, st, a, GreyNew)
		expectOutcome(t, st, b, GreyNew)
		b.Now = t0.Add(10 * time.Minute)
		expectOutcome(t, st, b, GreyFirstPass)

		got := map[string]GreyEntry{}
		if err := st.GreyEntries(ctx, t0.Add(11*time.Minute), func(e GreyEntry) bool { got[e.ID] = e; return true }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[a.ID()].State != GreyPending || got[b.ID()].State != GreyPassed ||
			got[a.ID()].Sender != "alice@example.com" || got[b.ID()].Client != "2001:db8:1:2::/64" ||
			got[a.ID()].IP != "192.0.2.7" || got[a.ID()].Helo != "mx.example.com" {
			t.Fatalf("entries = %+v", got)
		}
		n := 0
		if err := st.GreyEntries(ctx, t0, func(GreyEntry) bool { n++; return false }); err != nil || n != 1 {
			t.Fatalf("stopping early: %d calls, %v", n, err)
		}

		// Release the pending one one minute after it was greylisted: the next attempt passes at once and
		// reports its real delay.
		now := t0.Add(time.Minute)
		if err := st.GreyRelease(ctx, a.ID(), now, testParams.Expiry); err != nil {
			t.Fatal(err)
		}
		if err := st.GreyRelease(ctx, a.ID(), now, testParams.Expiry); !errors.Is(err, ErrNotFound) {
			t.Fatalf("releasing a passed entry: %v, want ErrNotFound", err)
		}
		if err := st.GreyRelease(ctx, "0123456789abcdef0123456789abcdef", now, testParams.Expiry); !errors.Is(err, ErrNotFound) {
			t.Fatalf("releasing a missing entry: %v, want ErrNotFound", err)
		}
		a.Now = t0.Add(90 * time.Second)
		res := expectOutcome(t, st, a, GreyFirstPass)
		if res.Delayed != 90*time.Second {
			t.Fatalf("delay after release = %v, want 90s", res.Delayed)
		}
		a.Now = t0.Add(2 * time.Minute)
		expectOutcome(t, st, a, GreyKnown)
	})

	t.Run("Purge", func(t *testing.T) {
		st := open(t)
		ctx := context.Background()
		for i := 0; i < 5; i++ {
			expectOutcome(t, st, req("192.0.2.0/24", fmt.Sprintf("s%d@example.com", i), "p@example.org", t0), GreyNew)
		}
		r := req("192.0.2.0/24", "keep@example.com", "p@example.org", t0)
		expectOutcome(t, st, r, GreyNew)
		r.Now = t0.Add(time.Hour)
		expectOutcome(t, st, r, GreyFirstPass)
		later := t0.Add(3 * 24 * time.Hour) // pending ones expired, the passed one lives
		n, err := st.Purge(ctx, later)
		if err != nil {
			t.Fatal(err)
		}
		if st.Backend() == "sqlite" && n != 5 {
			t.Fatalf("purged %d, want 5", n)
		}
		count := 0
		if err := st.GreyEntries(ctx, later, func(e GreyEntry) bool {
			count++
			if e.Sender != "keep@example.com" {
				t.Errorf("unexpected live entry %+v", e)
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if count != 1 {
			t.Fatalf("%d live entries after purge, want 1", count)
		}
	})

	t.Run("Concurrent32", func(t *testing.T) {
		st := open(t)
		r := req("192.0.2.0/24", "burst@example.com", "one@example.org", t0)
		var wg sync.WaitGroup
		outcomes := make([]GreyOutcome, 32)
		errs := make([]error, 32)
		start := make(chan struct{})
		for i := range outcomes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				rq := r
				rq.Now = t0.Add(time.Duration(i) * time.Millisecond)
				res, err := st.Greylist(context.Background(), rq)
				outcomes[i], errs[i] = res.Outcome, err
			}()
		}
		close(start)
		wg.Wait()
		news := 0
		for i, o := range outcomes {
			if errs[i] != nil {
				t.Fatalf("goroutine %d: %v", i, errs[i])
			}
			switch o {
			case GreyNew:
				news++
			case GreyEarly:
			default:
				t.Fatalf("goroutine %d: outcome %q", i, o)
			}
		}
		if news != 1 {
			t.Fatalf("%d goroutines were told the triplet is new, want exactly 1", news)
		}
		var entries []GreyEntry
		if err := st.GreyEntries(context.Background(), t0, func(e GreyEntry) bool { entries = append(entries, e); return true }); err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Attempts != 32 {
			t.Fatalf("entries = %+v, want one record with 32 attempts", entries)
		}
	})
}
