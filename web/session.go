package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// session is one login: an administrator's, or a recipient's opened from a digest link.
type session struct {
	id      string
	user    string // the administrator, or the recipient's address
	admin   bool
	rcpt    string // set for a digest session: only mail to this address
	csrf    string
	expires time.Time
}

// sessions is the server-side session table. It lives in the process: a restart logs everyone out, and
// several moat instances behind one name need sticky routing.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	now func() time.Time
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, now: now}
}

// randomToken returns 32 random bytes, base64url-encoded.
func randomToken() string {
	b := make([]byte, 32)
	// crypto/rand.Read never fails on the platforms Go supports (it panics instead).
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session lasting ttl and returns it.
func (s *sessions) create(user string, admin bool, rcpt string, ttl time.Duration) *session {
	sess := &session{id: randomToken(), user: user, admin: admin, rcpt: rcpt, csrf: randomToken(), expires: s.now().Add(ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire()
	s.m[sess.id] = sess
	return sess
}

// get returns the live session of id, or nil.
func (s *sessions) get(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.m[id]
	if sess == nil {
		return nil
	}
	if !s.now().Before(sess.expires) {
		delete(s.m, id)
		return nil
	}
	return sess
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// expire drops ended sessions; the caller holds mu. Run at every login, it keeps the table as small as
// the live sessions without a timer of its own.
func (s *sessions) expire() {
	now := s.now()
	for id, sess := range s.m {
		if !now.Before(sess.expires) {
			delete(s.m, id)
		}
	}
}

// tokenEqual compares two secrets in constant time.
func tokenEqual(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// limiter counts failed logins per key (a client address, a user name) in a sliding window.
type limiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	fails  map[string][]time.Time
	now    func() time.Time
}

func newLimiter(max int, window time.Duration, now func() time.Time) *limiter {
	return &limiter{max: max, window: window, fails: map[string][]time.Time{}, now: now}
}

// blocked reports whether key has used up its failed attempts of the window.
func (l *limiter) blocked(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recent(key)) >= l.max
}

// fail records a failed attempt of key.
func (l *limiter) fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fails[key] = append(l.recent(key), l.now())
	// Bound the table against a flood of distinct keys: forget the keys whose window has passed.
	if len(l.fails) > 10000 {
		for k := range l.fails {
			if len(l.recent(k)) == 0 {
				delete(l.fails, k)
			}
		}
	}
}

// reset forgets key's failures (after a successful login).
func (l *limiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, key)
}

// recent returns key's failures inside the window, dropping older ones; the caller holds mu.
func (l *limiter) recent(key string) []time.Time {
	cut := l.now().Add(-l.window)
	ts := l.fails[key]
	i := 0
	for i < len(ts) && !ts[i].After(cut) {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fails, key)
		return nil
	}
	l.fails[key] = ts
	return ts
}
