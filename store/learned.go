package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultLearnedTTL is how long a learned sender stays on the learned white list when the caller gives no
// expiry of its own.
const DefaultLearnedTTL = 180 * 24 * time.Hour

// LearnedSenders is the learned white list: envelope senders a person vouched for (the quarantine's "release
// and white-list the sender"), each with an expiry. Senders are stored as hashes of the lower-cased address
// (LearnedKey), never in clear; so is who vouched. The senderlists check consults it, and by default counts a
// learned sender only with proof (SPF or aligned DKIM) that the sender sent the message.
type LearnedSenders interface {
	// LearnSender puts sender on the list, by whom, until now+ttl (DefaultLearnedTTL when ttl <= 0); learning
	// a sender again moves the expiry.
	LearnSender(ctx context.Context, sender, by string, now time.Time, ttl time.Duration) error
	// ForgetSender takes sender off the list; forgetting a sender who is not on it is no error.
	ForgetSender(ctx context.Context, sender string) error
	// LearnedSender reports whether sender is on the list and not expired at now.
	LearnedSender(ctx context.Context, sender string, now time.Time) (bool, error)
}

// ErrNoSender is returned for an empty or null sender, which cannot be learned.
var ErrNoSender = errors.New("store: a learned sender must be an address")

// LearnedKey is the stored name of a sender: a hash of the address without angle brackets, lower-cased.
func LearnedKey(sender string) (string, error) {
	a := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(sender), "<"), ">"))
	if !strings.Contains(a, "@") || strings.HasPrefix(a, "@") || strings.HasSuffix(a, "@") {
		return "", fmt.Errorf("%w: %q", ErrNoSender, sender)
	}
	return learnedHash("sender", a), nil
}

func learnedHash(kind, v string) string {
	h := sha256.Sum256([]byte("moat-learned\x00" + kind + "\x00" + v))
	return hex.EncodeToString(h[:16])
}

func learnedTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return DefaultLearnedTTL
	}
	return ttl
}

const sqliteLearnedSchema = `
CREATE TABLE IF NOT EXISTS learned_senders (
	key     TEXT PRIMARY KEY,
	by      TEXT NOT NULL,
	learned INTEGER NOT NULL,
	expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS learned_senders_expires ON learned_senders(expires);
`

// LearnSender implements LearnedSenders.
func (s *SQLite) LearnSender(ctx context.Context, sender, by string, now time.Time, ttl time.Duration) error {
	key, err := LearnedKey(sender)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO learned_senders (key, by, learned, expires) VALUES (?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET by = excluded.by, learned = excluded.learned, expires = excluded.expires`,
		key, learnedHash("by", by), ms(now), ms(now.Add(learnedTTL(ttl))))
	if err != nil {
		return fmt.Errorf("store: learn sender: %w", err)
	}
	return nil
}

// ForgetSender implements LearnedSenders.
func (s *SQLite) ForgetSender(ctx context.Context, sender string) error {
	key, err := LearnedKey(sender)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, "DELETE FROM learned_senders WHERE key = ?", key); err != nil {
		return fmt.Errorf("store: forget sender: %w", err)
	}
	return nil
}

// LearnedSender implements LearnedSenders.
func (s *SQLite) LearnedSender(ctx context.Context, sender string, now time.Time) (bool, error) {
	key, err := LearnedKey(sender)
	if err != nil {
		return false, nil // the null sender is never on the list
	}
	var exp int64
	err = s.db.QueryRowContext(ctx, "SELECT expires FROM learned_senders WHERE key = ?", key).Scan(&exp)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("store: look up learned sender: %w", err)
	}
	return exp > ms(now), nil
}

// learnedKey is a learned sender's Redis key; its value is "EXPIRES_MS BY_HASH", and it carries the native
// expiry too, so that Redis needs no purge.
func (r *Redis) learnedKey(key string) string { return r.prefix + "learned:" + key }

// LearnSender implements LearnedSenders.
func (r *Redis) LearnSender(ctx context.Context, sender, by string, now time.Time, ttl time.Duration) error {
	key, err := LearnedKey(sender)
	if err != nil {
		return err
	}
	ttl = learnedTTL(ttl)
	v := strconv.FormatInt(ms(now.Add(ttl)), 10) + " " + learnedHash("by", by)
	if err := r.rdb.Set(ctx, r.learnedKey(key), v, ttl).Err(); err != nil {
		return fmt.Errorf("store: learn sender: %w", err)
	}
	return nil
}

// ForgetSender implements LearnedSenders.
func (r *Redis) ForgetSender(ctx context.Context, sender string) error {
	key, err := LearnedKey(sender)
	if err != nil {
		return err
	}
	if err := r.rdb.Del(ctx, r.learnedKey(key)).Err(); err != nil {
		return fmt.Errorf("store: forget sender: %w", err)
	}
	return nil
}

// LearnedSender implements LearnedSenders: the stored expiry decides (the caller's clock, as for the other
// state), the native expiry only cleans up.
func (r *Redis) LearnedSender(ctx context.Context, sender string, now time.Time) (bool, error) {
	key, err := LearnedKey(sender)
	if err != nil {
		return false, nil
	}
	v, err := r.rdb.Get(ctx, r.learnedKey(key)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("store: look up learned sender: %w", err)
	}
	expStr, _, _ := strings.Cut(v, " ")
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil {
		return false, fmt.Errorf("store: learned sender: malformed value %q", v)
	}
	return exp > ms(now), nil
}
