package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLite is the embedded backend.
type SQLite struct {
	db   *sql.DB
	path string
}

const sqliteSchema = `
CREATE TABLE IF NOT EXISTS greylist (
	id         TEXT PRIMARY KEY,
	client     TEXT NOT NULL,
	sender     TEXT NOT NULL,
	rcpt       TEXT NOT NULL,
	ip         TEXT NOT NULL DEFAULT '',
	helo       TEXT NOT NULL DEFAULT '',
	state      TEXT NOT NULL,
	first_seen INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL,
	passed_at  INTEGER NOT NULL DEFAULT 0,
	attempts   INTEGER NOT NULL DEFAULT 0,
	passes     INTEGER NOT NULL DEFAULT 0,
	expires    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS greylist_expires ON greylist(expires);
CREATE TABLE IF NOT EXISTS greylist_clients (
	client     TEXT PRIMARY KEY,
	count      INTEGER NOT NULL,
	last_count INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL,
	expires    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS greylist_clients_expires ON greylist_clients(expires);
`

// OpenSQLite opens (creating if needed) the database at path in WAL mode. With full, every commit is synced
// to disk (survives power loss); otherwise commits survive a crash of the process but not of the machine.
func OpenSQLite(ctx context.Context, path string, full bool) (*SQLite, error) {
	return openSQLiteDB(ctx, path, full, true)
}

// OpenSQLiteExisting opens the database at path like OpenSQLite, but never creates it (SQLite mode=rw); for
// command-line tools, which must not leave an empty database wherever they are run. Errors name the
// absolute path.
func OpenSQLiteExisting(ctx context.Context, path string, full bool) (*SQLite, error) {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: open %s: %w (moat serve creates the database; check [store] path)", path, err)
	}
	return openSQLiteDB(ctx, path, full, false)
}

func openSQLiteDB(ctx context.Context, path string, full, create bool) (*SQLite, error) {
	sync := "NORMAL"
	if full {
		sync = "FULL"
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+sync+")")
	q.Add("_pragma", "foreign_keys(OFF)")
	q.Set("_txlock", "immediate")
	if !create {
		q.Set("mode", "rw")
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One connection: SQLite has one writer anyway, and queueing in Go's pool is fairer (better p99) than
	// SQLite's sleeping busy handler. Other processes (moat greylist …) wait on busy_timeout.
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if _, err := db.ExecContext(ctx, sqliteSchema+sqliteCorrespondentsSchema+sqliteQuarantineSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		db.Close()
		return nil, fmt.Errorf("store: open %s: journal mode is %q, not wal", path, mode)
	}
	return &SQLite{db: db, path: path}, nil
}

// Backend returns "sqlite".
func (s *SQLite) Backend() string { return "sqlite" }

// Path is the database file.
func (s *SQLite) Path() string { return s.path }

// Close closes the database (the last connection to close checkpoints the WAL).
func (s *SQLite) Close() error { return s.db.Close() }

// IntegrityCheck runs PRAGMA integrity_check and returns an error unless the database is sound.
func (s *SQLite) IntegrityCheck(ctx context.Context) error {
	var res string
	if err := s.db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Errorf("store: integrity check: %w", err)
	}
	if res != "ok" {
		return fmt.Errorf("store: integrity check: %s", res)
	}
	return nil
}

const greyColumns = "id, client, sender, rcpt, ip, helo, state, first_seen, last_seen, passed_at, attempts, passes, expires"

type scanner interface{ Scan(dest ...any) error }

func scanEntry(r scanner) (GreyEntry, error) {
	var e GreyEntry
	var state string
	var first, last, passed, exp int64
	err := r.Scan(&e.ID, &e.Client, &e.Sender, &e.Rcpt, &e.IP, &e.Helo, &state, &first, &last, &passed,
		&e.Attempts, &e.Passes, &exp)
	e.State = GreyState(state)
	e.FirstSeen, e.LastSeen, e.PassedAt, e.Expires = fromMS(first), fromMS(last), fromMS(passed), fromMS(exp)
	return e, err
}

func scanClient(r scanner) (ClientEntry, error) {
	var c ClientEntry
	var lc, ls, exp int64
	err := r.Scan(&c.Client, &c.Count, &lc, &ls, &exp)
	c.LastCount, c.LastSeen, c.Expires = fromMS(lc), fromMS(ls), fromMS(exp)
	return c, err
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getEntry(ctx context.Context, q querier, id string) (*GreyEntry, error) {
	e, err := scanEntry(q.QueryRowContext(ctx, "SELECT "+greyColumns+" FROM greylist WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &e, nil
}

func getClient(ctx context.Context, q querier, client string) (*ClientEntry, error) {
	c, err := scanClient(q.QueryRowContext(ctx,
		"SELECT client, count, last_count, last_seen, expires FROM greylist_clients WHERE client = ?", client))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// getClients reads the auto-whitelist records of the request's client key and network key (nil when absent).
func getClients(ctx context.Context, q querier, req GreyRequest) (cl, ncl *ClientEntry, err error) {
	if cl, err = getClient(ctx, q, req.Client); err != nil {
		return nil, nil, err
	}
	if nk := req.networkKey(); nk != "" {
		if ncl, err = getClient(ctx, q, nk); err != nil {
			return nil, nil, err
		}
	}
	return cl, ncl, nil
}

// Greylist implements Store: one IMMEDIATE transaction reads the triplet and client rows, decides, and
// upserts what changed, so concurrent decisions on one triplet are serialised.
func (s *SQLite) Greylist(ctx context.Context, req GreyRequest) (GreyResult, error) {
	id := req.ID()
	if req.ReadOnly {
		rec, err := getEntry(ctx, s.db, id)
		if err != nil {
			return GreyResult{}, fmt.Errorf("store: greylist: %w", err)
		}
		cl, ncl, err := getClients(ctx, s.db, req)
		if err != nil {
			return GreyResult{}, fmt.Errorf("store: greylist: %w", err)
		}
		_, _, _, res := decide(rec, cl, ncl, req)
		return res, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return GreyResult{}, fmt.Errorf("store: greylist: %w", err)
	}
	defer tx.Rollback()
	rec, err := getEntry(ctx, tx, id)
	if err != nil {
		return GreyResult{}, fmt.Errorf("store: greylist: %w", err)
	}
	var cl, ncl *ClientEntry
	if req.Params.AutoWhitelist > 0 {
		if cl, ncl, err = getClients(ctx, tx, req); err != nil {
			return GreyResult{}, fmt.Errorf("store: greylist: %w", err)
		}
	}
	newRec, newCl, newNCl, res := decide(rec, cl, ncl, req)
	if req.DeferPass && res.Pass() {
		return res, nil // the deferred transaction rolls back: nothing is written
	}
	if newRec != nil {
		e := newRec
		_, err = tx.ExecContext(ctx, `INSERT INTO greylist (`+greyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET ip = excluded.ip, helo = excluded.helo, state = excluded.state,
			first_seen = excluded.first_seen, last_seen = excluded.last_seen, passed_at = excluded.passed_at,
			attempts = excluded.attempts, passes = excluded.passes, expires = excluded.expires`,
			e.ID, e.Client, e.Sender, e.Rcpt, e.IP, e.Helo, string(e.State), ms(e.FirstSeen), ms(e.LastSeen),
			ms(e.PassedAt), e.Attempts, e.Passes, ms(e.Expires))
		if err != nil {
			return GreyResult{}, fmt.Errorf("store: greylist: %w", err)
		}
	}
	for _, c := range []*ClientEntry{newCl, newNCl} {
		if c == nil {
			continue
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO greylist_clients (client, count, last_count, last_seen, expires)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT(client) DO UPDATE SET count = excluded.count,
			last_count = excluded.last_count, last_seen = excluded.last_seen, expires = excluded.expires`,
			c.Client, c.Count, ms(c.LastCount), ms(c.LastSeen), ms(c.Expires))
		if err != nil {
			return GreyResult{}, fmt.Errorf("store: greylist: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return GreyResult{}, fmt.Errorf("store: greylist: %w", err)
	}
	return res, nil
}

// GreyEntry implements Store.
func (s *SQLite) GreyEntry(ctx context.Context, id string, now time.Time) (GreyEntry, error) {
	e, err := getEntry(ctx, s.db, id)
	if err != nil {
		return GreyEntry{}, fmt.Errorf("store: greylist entry: %w", err)
	}
	if e == nil || !now.Before(e.Expires) {
		return GreyEntry{}, ErrNotFound
	}
	return *e, nil
}

// GreyEntries implements Store.
func (s *SQLite) GreyEntries(ctx context.Context, now time.Time, fn func(GreyEntry) bool) error {
	rows, err := s.db.QueryContext(ctx, "SELECT "+greyColumns+" FROM greylist WHERE expires > ? ORDER BY first_seen", ms(now))
	if err != nil {
		return fmt.Errorf("store: greylist entries: %w", err)
	}
	// Read everything first: fn may call back into the store, which has one connection.
	var all []GreyEntry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			rows.Close()
			return fmt.Errorf("store: greylist entries: %w", err)
		}
		all = append(all, e)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return fmt.Errorf("store: greylist entries: %w", err)
	}
	for _, e := range all {
		if !fn(e) {
			break
		}
	}
	return nil
}

// GreyList implements Store: the filters, the order and the limit are SQL, so that only the rows printed
// are read into memory; an ID prefix is a range on the primary key.
func (s *SQLite) GreyList(ctx context.Context, now time.Time, q GreyQuery) ([]GreyEntry, error) {
	where := []string{"expires > ?"}
	args := []any{ms(now)}
	if q.IDPrefix != "" {
		// IDs are lower-case hexadecimal: every ID with the prefix sorts in [prefix, prefix+"g").
		where = append(where, "id >= ? AND id < ?")
		args = append(args, q.IDPrefix, q.IDPrefix+"g")
	}
	if q.State != "" {
		where = append(where, "state = ?")
		args = append(args, string(q.State))
	}
	for _, f := range []struct{ col, sub string }{{"client", q.Client}, {"sender", q.Sender}, {"rcpt", q.Rcpt}} {
		if f.sub != "" {
			where = append(where, f.col+` LIKE ? ESCAPE '\'`)
			args = append(args, "%"+escapeLike(f.sub)+"%")
		}
	}
	query := "SELECT " + greyColumns + " FROM greylist WHERE " + strings.Join(where, " AND ") + " ORDER BY first_seen, id"
	if q.Limit > 0 {
		query += " LIMIT ?"
		args = append(args, q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: greylist list: %w", err)
	}
	defer rows.Close()
	var out []GreyEntry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("store: greylist list: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: greylist list: %w", err)
	}
	return out, nil
}

// escapeLike quotes the LIKE wildcards of s for ESCAPE '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(s)
}

// GreyRelease implements Store.
func (s *SQLite) GreyRelease(ctx context.Context, id string, now time.Time, expiry time.Duration) error {
	res, err := s.db.ExecContext(ctx, `UPDATE greylist SET state = ?, passed_at = ?, passes = 0, expires = ?
		WHERE id = ? AND state = ? AND expires > ?`,
		string(GreyPassed), ms(now), ms(now.Add(expiry)), id, string(GreyPending), ms(now))
	if err != nil {
		return fmt.Errorf("store: greylist release: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store: greylist release %s: no pending entry: %w", id, ErrNotFound)
	}
	return nil
}

// GreyClient implements Store.
func (s *SQLite) GreyClient(ctx context.Context, client string, now time.Time) (ClientEntry, error) {
	c, err := getClient(ctx, s.db, client)
	if err != nil {
		return ClientEntry{}, fmt.Errorf("store: greylist client: %w", err)
	}
	if c == nil || !now.Before(c.Expires) {
		return ClientEntry{}, ErrNotFound
	}
	return *c, nil
}

// Purge implements Store: indexed deletes in batches, so that decisions are not held up for long.
func (s *SQLite) Purge(ctx context.Context, now time.Time) (int, error) {
	total := 0
	stmts := []string{
		"DELETE FROM greylist WHERE id IN (SELECT id FROM greylist WHERE expires <= ? LIMIT 1000)",
		"DELETE FROM greylist_clients WHERE client IN (SELECT client FROM greylist_clients WHERE expires <= ? LIMIT 1000)",
		"DELETE FROM correspondents WHERE (user, key) IN (SELECT user, key FROM correspondents WHERE expires <= ? LIMIT 1000)",
	}
	for _, q := range stmts {
		for {
			res, err := s.db.ExecContext(ctx, q, ms(now))
			if err != nil {
				return total, fmt.Errorf("store: purge: %w", err)
			}
			n, _ := res.RowsAffected()
			total += int(n)
			if n < 1000 {
				break
			}
		}
	}
	return total, nil
}
