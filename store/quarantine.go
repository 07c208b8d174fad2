package store

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Quarantine keeps the messages the quarantine holds: each message's bytes, and its record, which is opaque
// to the store (the quarantine package encodes it). Both backends implement it. Bodies are written in chunks
// of QuarantineChunk bytes and read back chunk by chunk, so that a large message is never held in memory
// whole.
type Quarantine interface {
	// QuarPut stores a new message and its record in one commit: once it returns nil, both are durable
	// (SQLite: one transaction; Redis: the record is written, atomically, only after the whole body).
	QuarPut(ctx context.Context, m HeldMessage, body io.Reader) error
	// QuarGet returns the record of id, or ErrNotFound.
	QuarGet(ctx context.Context, id string) (HeldMessage, error)
	// QuarBody returns the bytes of message id as they were stored, or ErrNotFound.
	QuarBody(ctx context.Context, id string) (io.ReadCloser, error)
	// QuarScan calls fn for every record, oldest first, until fn returns false.
	QuarScan(ctx context.Context, fn func(HeldMessage) bool) error
	// QuarUpdate changes the record of id atomically: fn gets the current record and changes Meta and Held.
	QuarUpdate(ctx context.Context, id string, fn func(*HeldMessage) error) error
	// QuarDelete removes message id, record and bytes; deleting a missing one is not an error.
	QuarDelete(ctx context.Context, id string) error
	// QuarExpire removes the messages whose Expires is not after now and returns how many went.
	QuarExpire(ctx context.Context, now time.Time) (int, error)
	// QuarStats counts the messages with a recipient still held, and the bytes of every stored message.
	QuarStats(ctx context.Context) (held int, bytes int64, err error)
}

// QuarantineChunk is the size of the pieces a message body is stored in.
const QuarantineChunk = 1 << 20

// HeldMessage is one quarantined message as the store sees it.
type HeldMessage struct {
	ID            string
	Time, Expires time.Time
	Size          int64  // bytes of the message
	Held          bool   // a recipient is still held
	Meta          []byte // the quarantine's record
}

// ErrExists is returned by QuarPut for an ID the store holds already.
var ErrExists = errors.New("store: entry exists already")

const sqliteQuarantineSchema = `
CREATE TABLE IF NOT EXISTS quarantine (
	id      TEXT PRIMARY KEY,
	time    INTEGER NOT NULL,
	expires INTEGER NOT NULL,
	size    INTEGER NOT NULL,
	held    INTEGER NOT NULL,
	meta    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_time ON quarantine(time);
CREATE INDEX IF NOT EXISTS quarantine_expires ON quarantine(expires);
CREATE TABLE IF NOT EXISTS quarantine_chunks (
	id   TEXT NOT NULL,
	seq  INTEGER NOT NULL,
	data BLOB NOT NULL,
	PRIMARY KEY (id, seq)
);
`

// QuarPut implements Quarantine: the record and every chunk in one transaction.
func (s *SQLite) QuarPut(ctx context.Context, m HeldMessage, body io.Reader) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: quarantine %s: %w", m.ID, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM quarantine WHERE id = ?", m.ID).Scan(&n); err != nil {
		return fmt.Errorf("store: quarantine %s: %w", m.ID, err)
	}
	if n > 0 {
		return fmt.Errorf("store: quarantine %s: %w", m.ID, ErrExists)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO quarantine (id, time, expires, size, held, meta) VALUES (?, ?, ?, ?, ?, ?)",
		m.ID, ms(m.Time), ms(m.Expires), m.Size, boolInt(m.Held), m.Meta); err != nil {
		return fmt.Errorf("store: quarantine %s: %w", m.ID, err)
	}
	err = chunks(body, func(seq int, p []byte) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO quarantine_chunks (id, seq, data) VALUES (?, ?, ?)", m.ID, seq, p)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: quarantine %s: %w", m.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: quarantine %s: %w", m.ID, err)
	}
	return nil
}

// chunks reads r to its end in pieces of QuarantineChunk bytes (the last may be shorter) and hands each to fn.
func chunks(r io.Reader, fn func(seq int, p []byte) error) error {
	buf := make([]byte, QuarantineChunk)
	for seq := 0; ; seq++ {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if ferr := fn(seq, buf[:n]); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read message: %w", err)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func scanHeld(r scanner) (HeldMessage, error) {
	var m HeldMessage
	var t, exp int64
	var held int
	err := r.Scan(&m.ID, &t, &exp, &m.Size, &held, &m.Meta)
	m.Time, m.Expires, m.Held = time.UnixMilli(t), time.UnixMilli(exp), held != 0
	return m, err
}

// QuarGet implements Quarantine.
func (s *SQLite) QuarGet(ctx context.Context, id string) (HeldMessage, error) {
	m, err := scanHeld(s.db.QueryRowContext(ctx, "SELECT id, time, expires, size, held, meta FROM quarantine WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return m, ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("store: quarantine %s: %w", id, err)
	}
	return m, nil
}

// QuarBody implements Quarantine: each chunk is read by its own query when the reader gets to it.
func (s *SQLite) QuarBody(ctx context.Context, id string) (io.ReadCloser, error) {
	if _, err := s.QuarGet(ctx, id); err != nil {
		return nil, err
	}
	return &chunkReader{next: func(seq int) ([]byte, error) {
		var p []byte
		err := s.db.QueryRowContext(ctx, "SELECT data FROM quarantine_chunks WHERE id = ? AND seq = ?", id, seq).Scan(&p)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, io.EOF
		}
		return p, err
	}}, nil
}

// chunkReader reads a body chunk after chunk; next returns io.EOF after the last.
type chunkReader struct {
	next func(seq int) ([]byte, error)
	seq  int
	buf  []byte
	err  error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		c.buf, c.err = c.next(c.seq)
		c.seq++
		if c.err != nil && c.err != io.EOF {
			c.err = fmt.Errorf("store: read quarantined message: %w", c.err)
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *chunkReader) Close() error { return nil }

// QuarScan implements Quarantine.
func (s *SQLite) QuarScan(ctx context.Context, fn func(HeldMessage) bool) error {
	// Read the records first, so that fn may call the store (one connection).
	rows, err := s.db.QueryContext(ctx, "SELECT id, time, expires, size, held, meta FROM quarantine ORDER BY time, id")
	if err != nil {
		return fmt.Errorf("store: quarantine: %w", err)
	}
	var all []HeldMessage
	for rows.Next() {
		m, err := scanHeld(rows)
		if err != nil {
			rows.Close()
			return fmt.Errorf("store: quarantine: %w", err)
		}
		all = append(all, m)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("store: quarantine: %w", err)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: quarantine: %w", err)
	}
	for _, m := range all {
		if !fn(m) {
			break
		}
	}
	return nil
}

// QuarUpdate implements Quarantine: a read and a write in one (immediate) transaction.
func (s *SQLite) QuarUpdate(ctx context.Context, id string, fn func(*HeldMessage) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: quarantine %s: %w", id, err)
	}
	defer tx.Rollback()
	m, err := scanHeld(tx.QueryRowContext(ctx, "SELECT id, time, expires, size, held, meta FROM quarantine WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("store: quarantine %s: %w", id, err)
	}
	if err := fn(&m); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE quarantine SET held = ?, meta = ? WHERE id = ?", boolInt(m.Held), m.Meta, id); err != nil {
		return fmt.Errorf("store: quarantine %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: quarantine %s: %w", id, err)
	}
	return nil
}

// QuarDelete implements Quarantine.
func (s *SQLite) QuarDelete(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: quarantine %s: %w", id, err)
	}
	defer tx.Rollback()
	for _, q := range []string{"DELETE FROM quarantine_chunks WHERE id = ?", "DELETE FROM quarantine WHERE id = ?"} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("store: quarantine %s: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: quarantine %s: %w", id, err)
	}
	return nil
}

// QuarExpire implements Quarantine.
func (s *SQLite) QuarExpire(ctx context.Context, now time.Time) (int, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id FROM quarantine WHERE expires <= ?", ms(now))
	if err != nil {
		return 0, fmt.Errorf("store: quarantine expiry: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("store: quarantine expiry: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	for i, id := range ids {
		if err := s.QuarDelete(ctx, id); err != nil {
			return i, err
		}
	}
	return len(ids), nil
}

// QuarStats implements Quarantine.
func (s *SQLite) QuarStats(ctx context.Context) (int, int64, error) {
	var held int
	var size int64
	err := s.db.QueryRowContext(ctx, "SELECT coalesce(sum(held), 0), coalesce(sum(size), 0) FROM quarantine").Scan(&held, &size)
	if err != nil {
		return 0, 0, fmt.Errorf("store: quarantine: %w", err)
	}
	return held, size, nil
}

// Redis keys of the quarantine (after the prefix):
//
//	quar:m:ID   hash of one record: time, expires, size, held, meta (native expiry at expires)
//	quar:b:ID   list of the body's chunks, each gzip-compressed (native expiry at expires)
//	quar:idx    sorted set of the IDs by time, for listing (members of expired records go in QuarExpire)
func (r *Redis) quarMeta(id string) string { return r.prefix + "quar:m:" + id }
func (r *Redis) quarBody(id string) string { return r.prefix + "quar:b:" + id }
func (r *Redis) quarIndex() string         { return r.prefix + "quar:idx" }

// QuarPut implements Quarantine: the compressed chunks first, then the record and the index entry in one
// MULTI/EXEC, so that another instance never sees a record whose body is incomplete.
func (r *Redis) QuarPut(ctx context.Context, m HeldMessage, body io.Reader) error {
	exists, err := r.rdb.Exists(ctx, r.quarMeta(m.ID)).Result()
	if err != nil {
		return fmt.Errorf("store: quarantine %s: %w", m.ID, err)
	}
	if exists > 0 {
		return fmt.Errorf("store: quarantine %s: %w", m.ID, ErrExists)
	}
	bkey := r.quarBody(m.ID)
	if err := r.rdb.Del(ctx, bkey).Err(); err != nil {
		return fmt.Errorf("store: quarantine %s: %w", m.ID, err)
	}
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	err = chunks(body, func(_ int, p []byte) error {
		zbuf.Reset()
		zw.Reset(&zbuf)
		if _, err := zw.Write(p); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		return r.rdb.RPush(ctx, bkey, zbuf.Bytes()).Err()
	})
	if err == nil {
		_, err = r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, r.quarMeta(m.ID), "time", ms(m.Time), "expires", ms(m.Expires), "size", m.Size,
				"held", boolInt(m.Held), "meta", m.Meta)
			p.ExpireAt(ctx, r.quarMeta(m.ID), m.Expires)
			p.ExpireAt(ctx, bkey, m.Expires)
			p.ZAdd(ctx, r.quarIndex(), redis.Z{Score: float64(ms(m.Time)), Member: m.ID})
			return nil
		})
	}
	if err != nil {
		r.rdb.Del(context.WithoutCancel(ctx), bkey)
		return fmt.Errorf("store: quarantine %s: %w", m.ID, err)
	}
	return nil
}

func heldFromHash(id string, h map[string]string) HeldMessage {
	t, _ := strconv.ParseInt(h["time"], 10, 64)
	exp, _ := strconv.ParseInt(h["expires"], 10, 64)
	size, _ := strconv.ParseInt(h["size"], 10, 64)
	return HeldMessage{ID: id, Time: time.UnixMilli(t), Expires: time.UnixMilli(exp), Size: size,
		Held: h["held"] == "1", Meta: []byte(h["meta"])}
}

// QuarGet implements Quarantine.
func (r *Redis) QuarGet(ctx context.Context, id string) (HeldMessage, error) {
	h, err := r.rdb.HGetAll(ctx, r.quarMeta(id)).Result()
	if err != nil {
		return HeldMessage{}, fmt.Errorf("store: quarantine %s: %w", id, err)
	}
	if len(h) == 0 {
		return HeldMessage{}, ErrNotFound
	}
	return heldFromHash(id, h), nil
}

// QuarBody implements Quarantine: one chunk fetched and decompressed at a time.
func (r *Redis) QuarBody(ctx context.Context, id string) (io.ReadCloser, error) {
	if _, err := r.QuarGet(ctx, id); err != nil {
		return nil, err
	}
	key := r.quarBody(id)
	return &chunkReader{next: func(seq int) ([]byte, error) {
		vals, err := r.rdb.LRange(ctx, key, int64(seq), int64(seq)).Result()
		if err != nil {
			return nil, err
		}
		if len(vals) == 0 {
			return nil, io.EOF
		}
		zr, err := gzip.NewReader(bytes.NewReader([]byte(vals[0])))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	}}, nil
}

// QuarScan implements Quarantine: the index in time order, each record fetched in pipelined batches.
func (r *Redis) QuarScan(ctx context.Context, fn func(HeldMessage) bool) error {
	ids, err := r.rdb.ZRange(ctx, r.quarIndex(), 0, -1).Result()
	if err != nil {
		return fmt.Errorf("store: quarantine: %w", err)
	}
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 500)]
		ids = ids[len(batch):]
		cmds := make([]*redis.MapStringStringCmd, len(batch))
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range batch {
				cmds[i] = p.HGetAll(ctx, r.quarMeta(id))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: quarantine: %w", err)
		}
		for i, c := range cmds {
			if h := c.Val(); len(h) > 0 && !fn(heldFromHash(batch[i], h)) {
				return nil
			}
		}
	}
	return nil
}

// QuarUpdate implements Quarantine: optimistic locking (WATCH), retried when another instance changed the
// record in between.
func (r *Redis) QuarUpdate(ctx context.Context, id string, fn func(*HeldMessage) error) error {
	key := r.quarMeta(id)
	for attempt := 0; attempt < 10; attempt++ {
		err := r.rdb.Watch(ctx, func(tx *redis.Tx) error {
			h, err := tx.HGetAll(ctx, key).Result()
			if err != nil {
				return err
			}
			if len(h) == 0 {
				return ErrNotFound
			}
			m := heldFromHash(id, h)
			if err := fn(&m); err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, key, "held", boolInt(m.Held), "meta", m.Meta)
				return nil
			})
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		return err // nil, ErrNotFound, fn's error or the server's
	}
	return fmt.Errorf("store: quarantine %s: changed concurrently too often", id)
}

// QuarDelete implements Quarantine.
func (r *Redis) QuarDelete(ctx context.Context, id string) error {
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.quarMeta(id), r.quarBody(id))
		p.ZRem(ctx, r.quarIndex(), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: quarantine %s: %w", id, err)
	}
	return nil
}

// QuarExpire implements Quarantine: Redis expires the records itself; this drops the index entries of the
// records gone and deletes those past their expiry (a clock ahead of the server's).
func (r *Redis) QuarExpire(ctx context.Context, now time.Time) (int, error) {
	ids, err := r.rdb.ZRange(ctx, r.quarIndex(), 0, -1).Result()
	if err != nil {
		return 0, fmt.Errorf("store: quarantine expiry: %w", err)
	}
	n := 0
	for _, id := range ids {
		m, err := r.QuarGet(ctx, id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return n, err
		}
		if errors.Is(err, ErrNotFound) || !m.Expires.After(now) {
			if err := r.QuarDelete(ctx, id); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// QuarStats implements Quarantine.
func (r *Redis) QuarStats(ctx context.Context) (int, int64, error) {
	held, size := 0, int64(0)
	err := r.QuarScan(ctx, func(m HeldMessage) bool {
		if m.Held {
			held++
		}
		size += m.Size
		return true
	})
	return held, size, err
}
