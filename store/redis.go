package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the shared backend. Keys (after the configured prefix):
//
//	grey:t:ID         hash of one triplet, native expiry (pending: window; passed: expiry)
//	grey:c:CLIENT     hash of one client key's auto-whitelist count, native expiry
type Redis struct {
	rdb    *redis.Client // everything else: idempotent, one retry
	script *redis.Client // the greylisting decision: never resent
	prefix string
}

// OpenRedis returns a Redis store; it does not wait for the server (go-redis connects and reconnects on use).
func OpenRedis(cfg Config) *Redis {
	timeout := cfg.RedisTimeout.D()
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	opts := func(retries int) *redis.Options {
		return &redis.Options{
			Addr:         cfg.RedisAddr,
			Password:     cfg.RedisPassword,
			DB:           cfg.RedisDB,
			DialTimeout:  timeout,
			ReadTimeout:  timeout,
			WriteTimeout: timeout,
			MaxRetries:   retries,
			PoolSize:     32,
		}
	}
	// Reads and idempotent writes may be resent once (after a stale pooled connection, say). The greylisting
	// script may not: after a read timeout or a dropped connection it may have run on the server already,
	// and running it twice would count an attempt or a pass twice. -1 turns go-redis's retries off.
	return &Redis{rdb: redis.NewClient(opts(1)), script: redis.NewClient(opts(-1)), prefix: cfg.RedisPrefix}
}

// Backend returns "redis".
func (r *Redis) Backend() string { return "redis" }

// Ping checks that the server answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("store: redis ping: %w", err)
	}
	return nil
}

// Close closes the connection pool.
func (r *Redis) Close() error { return errors.Join(r.rdb.Close(), r.script.Close()) }

func (r *Redis) tripletKey(id string) string { return r.prefix + "grey:t:" + id }
func (r *Redis) clientKey(c string) string   { return r.prefix + "grey:c:" + c }
func (r *Redis) tripletPattern() string      { return escapeGlob(r.prefix+"grey:t:") + "*" }

// escapeGlob quotes the glob characters of a SCAN MATCH pattern.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// greylistScript is decide() in Lua, run atomically by the server. Times are milliseconds since the epoch,
// given by the caller; native expiries are set relative (PEXPIRE), so that a caller's clock that differs from
// the server's does not expire keys early.
//
// KEYS[1] triplet hash, KEYS[2] client hash, KEYS[3] network hash (ignored when ARGV[14] is empty).
// ARGV: now delay window expiry awl_n awl_interval readonly id client sender rcpt ip helo network
// Returns {outcome, state, first_seen, last_seen, passed_at, attempts, passes, expires, client_count}.
var greylistScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local delay, window, expiry = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local awln, awlint, ro = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == "1"
local hasnet = ARGV[14] ~= ''

local function client(key)
  local c = redis.call('HMGET', key, 'count', 'last_count', 'expires')
  local count, last, exp = tonumber(c[1]), tonumber(c[2]), tonumber(c[3])
  if count ~= nil and exp ~= nil and now < exp then return {count, last} end
  return nil
end
local cl = client(KEYS[2])
local ncl = nil
if hasnet then ncl = client(KEYS[3]) end

local function listed(c) return awln > 0 and c ~= nil and c[1] >= awln end
if listed(cl) or listed(ncl) then
  local best = 0
  for i, c in ipairs({{KEYS[2], cl}, {KEYS[3], ncl}}) do
    if c[2] ~= nil then
      if c[2][1] > best then best = c[2][1] end
      if not ro then
        redis.call('HSET', c[1], 'last_seen', now, 'expires', now + expiry)
        redis.call('PEXPIRE', c[1], expiry)
      end
    end
  end
  return {'whitelisted', '', 0, 0, 0, 0, 0, 0, best}
end

local t = redis.call('HMGET', KEYS[1], 'state', 'first_seen', 'passed_at', 'attempts', 'passes', 'expires')
local state, first, passed, attempts, passes, exp = t[1], tonumber(t[2]), tonumber(t[3]), tonumber(t[4]), tonumber(t[5]), tonumber(t[6])
local live = state and exp ~= nil and now < exp
local outcome
if not live then
  state, first, passed, attempts, passes, exp = 'pending', now, 0, 1, 0, now + window
  outcome = 'new'
elseif state == 'pending' and now < first + delay then
  attempts = attempts + 1
  outcome = 'early'
elseif state == 'pending' then
  attempts = attempts + 1
  state, passed, passes, exp = 'passed', now, 1, now + expiry
  outcome = 'passed'
elseif passes == 0 then
  passes, exp = 1, now + expiry
  outcome = 'passed'
else
  passes, exp = passes + 1, now + expiry
  outcome = 'known'
end

local best = 0
if cl ~= nil then best = cl[1] end
if ncl ~= nil and ncl[1] > best then best = ncl[1] end
local pass = outcome == 'passed' or outcome == 'known'
if pass and awln > 0 then
  local function count(key, name, c)
    local ccount, clast
    if c == nil then
      if outcome == 'passed' then ccount, clast = 1, now else ccount, clast = 0, 0 end
    else
      ccount, clast = c[1], c[2]
      if outcome == 'passed' and now >= clast + awlint then ccount, clast = ccount + 1, now end
    end
    if not ro then
      redis.call('HSET', key, 'client', name, 'count', ccount, 'last_count', clast, 'last_seen', now, 'expires', now + expiry)
      redis.call('PEXPIRE', key, expiry)
    end
    return ccount
  end
  best = count(KEYS[2], ARGV[9], cl)
  if hasnet then
    local n = count(KEYS[3], ARGV[14], ncl)
    if n > best then best = n end
  end
end

if not ro then
  redis.call('HSET', KEYS[1], 'id', ARGV[8], 'client', ARGV[9], 'sender', ARGV[10], 'rcpt', ARGV[11],
    'ip', ARGV[12], 'helo', ARGV[13], 'state', state, 'first_seen', first, 'last_seen', now,
    'passed_at', passed, 'attempts', attempts, 'passes', passes, 'expires', exp)
  redis.call('PEXPIRE', KEYS[1], exp - now)
end
return {outcome, state, first, now, passed, attempts, passes, exp, best}
`)

// releaseScript makes a live pending triplet passed. KEYS[1] triplet; ARGV: now expiry. Returns 1 or 0.
var releaseScript = redis.NewScript(`
local t = redis.call('HMGET', KEYS[1], 'state', 'expires')
local now, expiry = tonumber(ARGV[1]), tonumber(ARGV[2])
if t[1] ~= 'pending' or tonumber(t[2]) == nil or now >= tonumber(t[2]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'passed', 'passed_at', now, 'passes', 0, 'expires', now + expiry)
redis.call('PEXPIRE', KEYS[1], expiry)
return 1
`)

// Greylist implements Store with one Lua script per decision.
func (r *Redis) Greylist(ctx context.Context, req GreyRequest) (GreyResult, error) {
	id := req.ID()
	p := req.Params
	ro := "0"
	if req.ReadOnly {
		ro = "1"
	}
	now := req.Now.UnixMilli()
	nk := req.networkKey()
	// The network key is always declared (Redis Cluster routes by declared keys); without one it repeats the
	// client key and the script ignores it.
	netKey := r.clientKey(req.Client)
	if nk != "" {
		netKey = r.clientKey(nk)
	}
	vals, err := greylistScript.Run(ctx, r.script, []string{r.tripletKey(id), r.clientKey(req.Client), netKey},
		now, p.Delay.Milliseconds(), p.Window.Milliseconds(), p.Expiry.Milliseconds(), p.AutoWhitelist,
		p.AutoWhitelistInterval.Milliseconds(), ro, id, req.Client, req.Sender, req.Rcpt, req.IP, req.Helo,
		nk).Slice()
	if err != nil {
		return GreyResult{}, fmt.Errorf("store: greylist: %w", err)
	}
	if len(vals) != 9 {
		return GreyResult{}, fmt.Errorf("store: greylist: script returned %d values", len(vals))
	}
	str := func(i int) string { s, _ := vals[i].(string); return s }
	num := func(i int) int64 {
		switch v := vals[i].(type) {
		case int64:
			return v
		case string:
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
		return 0
	}
	res := GreyResult{Outcome: GreyOutcome(str(0)), ClientCount: int(num(8))}
	if res.Outcome != GreyWhitelisted {
		res.Entry = GreyEntry{ID: id, Triplet: req.Triplet, IP: req.IP, Helo: req.Helo, State: GreyState(str(1)),
			FirstSeen: fromMS(num(2)), LastSeen: fromMS(num(3)), PassedAt: fromMS(num(4)),
			Attempts: int(num(5)), Passes: int(num(6)), Expires: fromMS(num(7))}
	}
	finishResult(&res, req)
	return res, nil
}

func entryFromHash(id string, h map[string]string) GreyEntry {
	n := func(k string) int64 { v, _ := strconv.ParseInt(h[k], 10, 64); return v }
	return GreyEntry{ID: id, Triplet: Triplet{Client: h["client"], Sender: h["sender"], Rcpt: h["rcpt"]},
		IP: h["ip"], Helo: h["helo"], State: GreyState(h["state"]), FirstSeen: fromMS(n("first_seen")),
		LastSeen: fromMS(n("last_seen")), PassedAt: fromMS(n("passed_at")), Attempts: int(n("attempts")),
		Passes: int(n("passes")), Expires: fromMS(n("expires"))}
}

// GreyEntry implements Store.
func (r *Redis) GreyEntry(ctx context.Context, id string, now time.Time) (GreyEntry, error) {
	h, err := r.rdb.HGetAll(ctx, r.tripletKey(id)).Result()
	if err != nil {
		return GreyEntry{}, fmt.Errorf("store: greylist entry: %w", err)
	}
	if len(h) == 0 {
		return GreyEntry{}, ErrNotFound
	}
	e := entryFromHash(id, h)
	if !now.Before(e.Expires) {
		return GreyEntry{}, ErrNotFound
	}
	return e, nil
}

// GreyEntries implements Store by scanning the triplet keys.
func (r *Redis) GreyEntries(ctx context.Context, now time.Time, fn func(GreyEntry) bool) error {
	return r.greyScan(ctx, r.tripletPattern(), now, fn)
}

// greyScan calls fn for every live triplet whose key matches the SCAN pattern.
func (r *Redis) greyScan(ctx context.Context, pattern string, now time.Time, fn func(GreyEntry) bool) error {
	it := r.rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	var keys []string
	flush := func() (bool, error) {
		if len(keys) == 0 {
			return true, nil
		}
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.HGetAll(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return false, err
		}
		for i, k := range keys {
			h := cmds[i].Val()
			if len(h) == 0 {
				continue
			}
			e := entryFromHash(strings.TrimPrefix(k, r.tripletKey("")), h)
			if !now.Before(e.Expires) {
				continue
			}
			if !fn(e) {
				return false, nil
			}
		}
		keys = keys[:0]
		return true, nil
	}
	for it.Next(ctx) {
		keys = append(keys, it.Val())
		if len(keys) >= 500 {
			more, err := flush()
			if err != nil {
				return fmt.Errorf("store: greylist entries: %w", err)
			}
			if !more {
				return nil
			}
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("store: greylist entries: %w", err)
	}
	if _, err := flush(); err != nil {
		return fmt.Errorf("store: greylist entries: %w", err)
	}
	return nil
}

// GreyList implements Store. Redis has no secondary index: it scans the triplet keys (only those with the ID
// prefix, by SCAN MATCH), keeps the matching entries, and sorts them.
func (r *Redis) GreyList(ctx context.Context, now time.Time, q GreyQuery) ([]GreyEntry, error) {
	var out []GreyEntry
	err := r.greyScan(ctx, escapeGlob(r.tripletKey(q.IDPrefix))+"*", now, func(e GreyEntry) bool {
		if q.match(e) {
			out = append(out, e)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].FirstSeen.Equal(out[j].FirstSeen) {
			return out[i].FirstSeen.Before(out[j].FirstSeen)
		}
		return out[i].ID < out[j].ID
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// GreyRelease implements Store.
func (r *Redis) GreyRelease(ctx context.Context, id string, now time.Time, expiry time.Duration) error {
	n, err := releaseScript.Run(ctx, r.script, []string{r.tripletKey(id)}, now.UnixMilli(), expiry.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("store: greylist release: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("store: greylist release %s: no pending entry: %w", id, ErrNotFound)
	}
	return nil
}

// GreyClient implements Store.
func (r *Redis) GreyClient(ctx context.Context, client string, now time.Time) (ClientEntry, error) {
	h, err := r.rdb.HGetAll(ctx, r.clientKey(client)).Result()
	if err != nil {
		return ClientEntry{}, fmt.Errorf("store: greylist client: %w", err)
	}
	if len(h) == 0 {
		return ClientEntry{}, ErrNotFound
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(h[k], 10, 64); return v }
	c := ClientEntry{Client: client, Count: int(n("count")), LastCount: fromMS(n("last_count")),
		LastSeen: fromMS(n("last_seen")), Expires: fromMS(n("expires"))}
	if !now.Before(c.Expires) {
		return ClientEntry{}, ErrNotFound
	}
	return c, nil
}

// Purge implements Store: Redis expires keys itself.
func (r *Redis) Purge(ctx context.Context, now time.Time) (int, error) { return 0, nil }
