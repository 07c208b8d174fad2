package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Correspondents is the state of trusted correspondents (the people local users write to), kept apart from
// greylisting and the key/value space: its own SQLite table and its own Redis keys. Both backends implement
// it. Users and keys are opaque strings to the store; the correspondents check passes hashes, so that no
// address is stored in clear.
type Correspondents interface {
	// RecordCorrespondents writes a batch of records in one write (one SQLite transaction, one Redis
	// MULTI/EXEC): each key of a record is stored for its user, expiring at Now+Expiry (an existing key's
	// expiry is pushed forward), and then the user keeps at most Max keys, those used most recently.
	RecordCorrespondents(ctx context.Context, batch []CorrRecord) error
	// LookupCorrespondents reports which of keys are live for user, in the order of keys.
	LookupCorrespondents(ctx context.Context, user string, keys []string, now time.Time) ([]bool, error)
	// CorrespondentEntries returns the live keys of user, latest expiry first.
	CorrespondentEntries(ctx context.Context, user string, now time.Time) ([]CorrEntry, error)
	// ForgetCorrespondents deletes keys of user (every key when keys is empty) and returns how many went.
	ForgetCorrespondents(ctx context.Context, user string, keys []string) (int, error)
}

// CorrRecord is one user's part of a batch.
type CorrRecord struct {
	User   string
	Keys   []string
	Now    time.Time
	Expiry time.Duration
	Max    int // at most this many keys per user; 0: no bound
}

// CorrEntry is one stored key of a user.
type CorrEntry struct {
	Key     string
	Expires time.Time
}

// CorrespondentsOf returns the correspondents part of st, or an error naming the backend when it has none.
func CorrespondentsOf(st Store) (Correspondents, error) {
	c, ok := st.(Correspondents)
	if !ok {
		return nil, fmt.Errorf("store: the %s backend does not keep correspondents", st.Backend())
	}
	return c, nil
}

const sqliteCorrespondentsSchema = `
CREATE TABLE IF NOT EXISTS correspondents (
	user    TEXT NOT NULL,
	key     TEXT NOT NULL,
	expires INTEGER NOT NULL,
	PRIMARY KEY (user, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS correspondents_user_expires ON correspondents(user, expires);
CREATE INDEX IF NOT EXISTS correspondents_expires ON correspondents(expires);
`

// RecordCorrespondents implements Correspondents: one transaction for the batch, one prepared upsert, and the
// expired and excess keys of each user deleted once per batch.
func (s *SQLite) RecordCorrespondents(ctx context.Context, batch []CorrRecord) error {
	if len(batch) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: record correspondents: %w", err)
	}
	defer tx.Rollback()
	upsert, err := tx.PrepareContext(ctx, `INSERT INTO correspondents (user, key, expires) VALUES (?, ?, ?)
		ON CONFLICT (user, key) DO UPDATE SET expires = max(expires, excluded.expires)`)
	if err != nil {
		return fmt.Errorf("store: record correspondents: %w", err)
	}
	defer upsert.Close()
	last := map[string]CorrRecord{} // per user, the latest record decides what is expired and the bound
	var users []string
	for _, r := range batch {
		exp := ms(r.Now.Add(r.Expiry))
		for _, k := range r.Keys {
			if _, err := upsert.ExecContext(ctx, r.User, k, exp); err != nil {
				return fmt.Errorf("store: record correspondents: %w", err)
			}
		}
		if _, ok := last[r.User]; !ok {
			users = append(users, r.User)
		}
		last[r.User] = r
	}
	for _, u := range users {
		r := last[u]
		if _, err := tx.ExecContext(ctx, "DELETE FROM correspondents WHERE user = ? AND expires <= ?", u, ms(r.Now)); err != nil {
			return fmt.Errorf("store: record correspondents: %w", err)
		}
		if r.Max > 0 {
			if _, err := tx.ExecContext(ctx, `DELETE FROM correspondents WHERE user = ? AND key IN
				(SELECT key FROM correspondents WHERE user = ? ORDER BY expires DESC, key LIMIT -1 OFFSET ?)`,
				u, u, r.Max); err != nil {
				return fmt.Errorf("store: record correspondents: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: record correspondents: %w", err)
	}
	return nil
}

// LookupCorrespondents implements Correspondents.
func (s *SQLite) LookupCorrespondents(ctx context.Context, user string, keys []string, now time.Time) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	args := []any{user, ms(now)}
	for _, k := range keys {
		args = append(args, k)
	}
	rows, err := s.db.QueryContext(ctx, "SELECT key FROM correspondents WHERE user = ? AND expires > ? AND key IN (?"+
		strings.Repeat(", ?", len(keys)-1)+")", args...)
	if err != nil {
		return nil, fmt.Errorf("store: look up correspondents: %w", err)
	}
	defer rows.Close()
	live := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("store: look up correspondents: %w", err)
		}
		live[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: look up correspondents: %w", err)
	}
	for i, k := range keys {
		out[i] = live[k]
	}
	return out, nil
}

// CorrespondentEntries implements Correspondents.
func (s *SQLite) CorrespondentEntries(ctx context.Context, user string, now time.Time) ([]CorrEntry, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT key, expires FROM correspondents WHERE user = ? AND expires > ? ORDER BY expires DESC, key",
		user, ms(now))
	if err != nil {
		return nil, fmt.Errorf("store: list correspondents: %w", err)
	}
	defer rows.Close()
	var out []CorrEntry
	for rows.Next() {
		var e CorrEntry
		var exp int64
		if err := rows.Scan(&e.Key, &exp); err != nil {
			return nil, fmt.Errorf("store: list correspondents: %w", err)
		}
		e.Expires = fromMS(exp)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list correspondents: %w", err)
	}
	return out, nil
}

// ForgetCorrespondents implements Correspondents.
func (s *SQLite) ForgetCorrespondents(ctx context.Context, user string, keys []string) (int, error) {
	q, args := "DELETE FROM correspondents WHERE user = ?", []any{user}
	if len(keys) > 0 {
		q += " AND key IN (?" + strings.Repeat(", ?", len(keys)-1) + ")"
		for _, k := range keys {
			args = append(args, k)
		}
	}
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("store: forget correspondents: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// corrKey is a user's sorted set: members are the keys, scores their expiry in Unix milliseconds.
func (r *Redis) corrKey(user string) string { return r.prefix + "corr:u:" + user }

// RecordCorrespondents implements Correspondents: one MULTI/EXEC for the batch. It is idempotent (ZADD GT,
// then trimming), so it may be resent after a dropped connection.
func (r *Redis) RecordCorrespondents(ctx context.Context, batch []CorrRecord) error {
	if len(batch) == 0 {
		return nil
	}
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, rec := range batch {
			key := r.corrKey(rec.User)
			exp := rec.Now.Add(rec.Expiry)
			members := make([]redis.Z, len(rec.Keys))
			for i, k := range rec.Keys {
				members[i] = redis.Z{Score: float64(ms(exp)), Member: k}
			}
			if len(members) > 0 {
				p.ZAddGT(ctx, key, members...)
			}
			p.ZRemRangeByScore(ctx, key, "-inf", fmt.Sprint(ms(rec.Now)))
			if rec.Max > 0 {
				// Lowest scores first: the keys used least recently go.
				p.ZRemRangeByRank(ctx, key, 0, int64(-rec.Max-1))
			}
			// The set outlives its newest key (whose expiry is this write's); the server's own clock counts
			// the TTL, so that a caller's clock in the past does not drop the set at once.
			p.PExpire(ctx, key, rec.Expiry)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: record correspondents: %w", err)
	}
	return nil
}

// LookupCorrespondents implements Correspondents.
func (r *Redis) LookupCorrespondents(ctx context.Context, user string, keys []string, now time.Time) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	scores, err := r.rdb.ZMScore(ctx, r.corrKey(user), keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("store: look up correspondents: %w", err)
	}
	// ZMSCORE answers nil for a missing member, which go-redis reads as 0.
	for i := range keys {
		out[i] = i < len(scores) && scores[i] > float64(ms(now))
	}
	return out, nil
}

// CorrespondentEntries implements Correspondents.
func (r *Redis) CorrespondentEntries(ctx context.Context, user string, now time.Time) ([]CorrEntry, error) {
	zs, err := r.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: r.corrKey(user), ByScore: true, Rev: true,
		Start: "+inf", Stop: "(" + fmt.Sprint(ms(now))}).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list correspondents: %w", err)
	}
	out := make([]CorrEntry, 0, len(zs))
	for _, z := range zs {
		out = append(out, CorrEntry{Key: fmt.Sprint(z.Member), Expires: fromMS(int64(z.Score))})
	}
	return out, nil
}

// ForgetCorrespondents implements Correspondents.
func (r *Redis) ForgetCorrespondents(ctx context.Context, user string, keys []string) (int, error) {
	key := r.corrKey(user)
	if len(keys) == 0 {
		n, err := r.rdb.ZCard(ctx, key).Result()
		if err != nil {
			return 0, fmt.Errorf("store: forget correspondents: %w", err)
		}
		if err := r.rdb.Del(ctx, key).Err(); err != nil {
			return 0, fmt.Errorf("store: forget correspondents: %w", err)
		}
		return int(n), nil
	}
	members := make([]any, len(keys))
	for i, k := range keys {
		members[i] = k
	}
	n, err := r.rdb.ZRem(ctx, key, members...).Result()
	if err != nil {
		return 0, fmt.Errorf("store: forget correspondents: %w", err)
	}
	return int(n), nil
}
