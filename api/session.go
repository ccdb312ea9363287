package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// The web page signs in without the API token: `realmsync open` asks for
// a sign-in link (POST /v1/session/link, with the token), whose one-time
// code the page's first request exchanges for a session cookie. The code
// is good once and for linkTTL; the cookie is HttpOnly and SameSite=Strict,
// so the page's scripts cannot read it and other sites' pages cannot send
// it. The token itself never appears in a URL.
const (
	linkTTL     = 2 * time.Minute
	sessionTTL  = 12 * time.Hour
	maxLinks    = 16 // sign-in codes not yet used
	maxSessions = 64
	cookieName  = "realmsync_session"
	secretBytes = 32
)

// sessions holds the sign-in codes and the sessions of the web page, in
// memory: a daemon that restarts signs everyone out. Both are kept by
// their hash, so that a lookup's timing tells nothing about a secret.
type sessions struct {
	mu    sync.Mutex
	codes map[[sha256.Size]byte]time.Time // code → when it expires
	live  map[[sha256.Size]byte]time.Time // session → when it expires
	now   func() time.Time
}

func newSessions() *sessions {
	return &sessions{
		codes: make(map[[sha256.Size]byte]time.Time),
		live:  make(map[[sha256.Size]byte]time.Time),
		now:   time.Now,
	}
}

// secret returns a new random secret as text.
func secret() string {
	var b [secretBytes]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// add puts a secret into m until ttl has passed, first dropping what has
// expired and, if m is full, the entry that expires first.
func (ss *sessions) add(m map[[sha256.Size]byte]time.Time, limit int, ttl time.Duration) (string, time.Time) {
	now := ss.now()
	for k, exp := range m {
		if !now.Before(exp) {
			delete(m, k)
		}
	}
	for len(m) >= limit {
		var first [sha256.Size]byte
		var at time.Time
		for k, exp := range m {
			if at.IsZero() || exp.Before(at) {
				first, at = k, exp
			}
		}
		delete(m, first)
	}
	s := secret()
	exp := now.Add(ttl)
	m[sha256.Sum256([]byte(s))] = exp
	return s, exp
}

// link makes a sign-in code.
func (ss *sessions) link() (code string, expires time.Time) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.add(ss.codes, maxLinks, linkTTL)
}

// redeem spends a sign-in code and starts a session; ok is false if the
// code is unknown, spent or expired.
func (ss *sessions) redeem(code string) (session string, ok bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := sha256.Sum256([]byte(code))
	exp, found := ss.codes[k]
	delete(ss.codes, k)
	if !found || !ss.now().Before(exp) {
		return "", false
	}
	session, _ = ss.add(ss.live, maxSessions, sessionTTL)
	return session, true
}

// valid reports whether a request carries the cookie of a live session.
func (ss *sessions) valid(r *http.Request) bool {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	exp, ok := ss.live[sha256.Sum256([]byte(c.Value))]
	return ok && ss.now().Before(exp)
}

// end ends the session of a request's cookie, if it has one.
func (ss *sessions) end(r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		ss.mu.Lock()
		delete(ss.live, sha256.Sum256([]byte(c.Value)))
		ss.mu.Unlock()
	}
}

// sessionCookie is the cookie of a session; an empty value with a
// negative age removes it.
func sessionCookie(value string, age time.Duration) *http.Cookie {
	return &http.Cookie{
		Name: cookieName, Value: value, Path: "/",
		MaxAge: int(age / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode,
	}
}

// SessionLink is the answer to POST /v1/session/link.
type SessionLink struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// sessionLink makes a sign-in link for the web page. Only a holder of the
// token may ask: a signed-in page cannot make more links.
func (s *Server) sessionLink(w http.ResponseWriter, r *http.Request) error {
	if !s.bearer(r) {
		return Errorf(http.StatusForbidden, CodeForbidden, "a sign-in link needs the API token, not a session")
	}
	code, exp := s.sessions.link()
	writeJSON(w, http.StatusCreated, SessionLink{URL: "http://" + r.Host + "/signin?code=" + code, ExpiresAt: exp.UTC()})
	return nil
}

// endSession signs the page out.
func (s *Server) endSession(w http.ResponseWriter, r *http.Request) error {
	s.sessions.end(r)
	http.SetCookie(w, sessionCookie("", -time.Second))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// signIn spends the code of a sign-in link, sets the session cookie and
// sends the browser on to the page, so that the link's URL is left behind.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	session, ok := s.sessions.redeem(r.URL.Query().Get("code"))
	if !ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte("This sign-in link was used already or has expired. Run `realmsync open` for a new one.\n"))
		return
	}
	http.SetCookie(w, sessionCookie(session, sessionTTL))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
