package web

import (
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// dummyHash is compared against when the user name is unknown, so that the answer takes as long as for a
// known name with a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("moat: no such user"), BcryptCost)

type loginData struct {
	Error string
	token string
}

func (d loginData) loginCSRF() string { return d.token }

func (s *Server) setCookie(w http.ResponseWriter, name, value string, ttl time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: int(ttl.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.cfg.TLS(),
	})
}

// loginPage shows the form, with a fresh token in a cookie and in the form (checked against each other).
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.showLogin(w, http.StatusOK, "")
}

func (s *Server) showLogin(w http.ResponseWriter, code int, msg string) {
	token := randomToken()
	s.setCookie(w, loginCookie, token, time.Hour)
	s.render(w, code, "login", nil, "Log in", loginData{Error: msg, token: token})
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(loginCookie)
	if err != nil || !tokenEqual(r.PostFormValue("csrf"), c.Value) {
		s.notice(w, http.StatusForbidden, nil, "Form refused", "The login form was stale or did not come from this page (CSRF token missing or wrong). Load the login page again.")
		return
	}
	user, pass, addr := r.PostFormValue("user"), r.PostFormValue("password"), clientAddr(r)
	if s.byAddr.blocked(addr) || s.byUser.blocked(user) {
		s.log.Warn("web: login refused: too many failed attempts", "user", user, "client", addr)
		s.showLogin(w, http.StatusTooManyRequests, "Too many failed logins. Wait a while and try again.")
		return
	}
	users, err := ReadPasswords(s.cfg.Passwords)
	if err != nil {
		s.log.Error("web: reading the password file failed", "err", err)
		s.showLogin(w, http.StatusInternalServerError, "The password file cannot be read; see moat's log.")
		return
	}
	hash, known := users[user]
	if !known {
		hash = dummyHash
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil || !known {
		s.byAddr.fail(addr)
		s.byUser.fail(user)
		s.log.Warn("web: login failed", "user", user, "client", addr)
		s.showLogin(w, http.StatusUnauthorized, "Wrong user name or password.")
		return
	}
	s.byUser.reset(user)
	sess := s.sessions.create(user, true, "", s.cfg.SessionTTL.D())
	s.setCookie(w, cookieName, sess.id, s.cfg.SessionTTL.D())
	s.setCookie(w, loginCookie, "", -time.Second)
	s.log.Info("web: login", "user", user, "client", addr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	s.sessions.delete(sess.id)
	s.setCookie(w, cookieName, "", -time.Second)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// withSession runs h with the request's session. Without one, a GET goes to the login page and anything
// else is refused; a POST must carry the session's CSRF token.
func (s *Server) withSession(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var sess *session
		if c, err := r.Cookie(cookieName); err == nil {
			sess = s.sessions.get(c.Value)
		}
		if sess == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			s.notice(w, http.StatusForbidden, nil, "Not logged in", "Your session has ended. Log in again.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			if !tokenEqual(r.PostFormValue("csrf"), sess.csrf) {
				s.log.Warn("web: form refused: CSRF token missing or wrong", "user", sess.user, "client", clientAddr(r), "path", r.URL.Path)
				s.notice(w, http.StatusForbidden, sess, "Form refused", "The form did not carry this session's token (CSRF protection). Go back, reload the page and try again.")
				return
			}
		}
		h(w, r, sess)
	}
}

// continueData is the page a digest link lands on: a link (and a refresh) to go on inside the new session.
// A cookie set by SameSite=Strict rules is not sent on a redirect that a mail client's link started, so the
// next request must come from this page.
type continueData struct{ Next string }

// digestLink opens a recipient's session from a signed link of a digest.
func (s *Server) digestLink(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.DigestsEnabled() {
		http.NotFound(w, r)
		return
	}
	rcpt, expires, err := verifyLink(s.cfg.secret, r.URL.Query(), s.now())
	if err != nil {
		s.log.Warn("web: digest link refused", "err", err, "client", clientAddr(r))
		s.notice(w, http.StatusForbidden, nil, "Link refused", err.Error()+". Use the link of your latest digest.")
		return
	}
	ttl := min(expires.Sub(s.now()), s.cfg.SessionTTL.D())
	sess := s.sessions.create(rcpt, false, rcpt, ttl)
	s.setCookie(w, cookieName, sess.id, ttl)
	s.log.Info("web: digest session opened", "rcpt", rcpt, "client", clientAddr(r))
	next := "/"
	if id := r.URL.Query().Get("m"); id != "" {
		next = "/msg/" + url.PathEscape(id)
		if a := r.URL.Query().Get("a"); actions[a].label != "" {
			next += "/confirm?action=" + url.QueryEscape(a)
		}
	}
	s.render(w, http.StatusOK, "continue", nil, "Your held mail", continueData{Next: next})
}
