package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
	"time"
)

// The web page signs in without the API token: `realmsync open` asks for
// a sign-in link (POST /v1/session/link, with the token), whose one-time
// code the page's first request exchanges for a session: a cookie, and a
// page key. The token itself never appears in a URL.
//
// The cookie is HttpOnly and SameSite=Strict: the page's scripts cannot
// read it and other sites' pages cannot send it. But browsers send a
// cookie of 127.0.0.1 to every port of 127.0.0.1, so any other local web
// server the browser visits would receive it too. Hence the page key:
// the sign-in hands it to the page in the URL's fragment, which no server
// sees; the page keeps it in its origin's local storage (which is per
// port), drops it from the address, and sends it with every request, in
// the X-Realmsync-Key header (or as ?key= where a browser sends no
// headers of the page's choosing: event streams and images). A request
// needs both.
//
// A code is good once and for linkTTL. A code presented a second time
// ends the session it started: if someone else raced the browser to it,
// what they got is over, and the page says so.
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
	codes map[[sha256.Size]byte]entry // code → when it expires, the session it started
	live  map[[sha256.Size]byte]entry // session → when it expires, its page key
	now   func() time.Time
}

// entry is a code or a session: when it expires, and the hash of what goes
// with it (for a spent code, its session; for a session, its page key).
type entry struct {
	expires time.Time
	with    [sha256.Size]byte
}

func newSessions() *sessions {
	return &sessions{
		codes: make(map[[sha256.Size]byte]entry),
		live:  make(map[[sha256.Size]byte]entry),
		now:   time.Now,
	}
}

func hash(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }

// secret returns a new random secret as text.
func secret() string {
	var b [secretBytes]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// add puts a new secret into m until ttl has passed, first dropping what
// has expired and, if m is full, the entry that expires first.
func (ss *sessions) add(m map[[sha256.Size]byte]entry, limit int, ttl time.Duration, with [sha256.Size]byte) (string, time.Time) {
	now := ss.now()
	for k, e := range m {
		if !now.Before(e.expires) {
			delete(m, k)
		}
	}
	for len(m) >= limit {
		var first [sha256.Size]byte
		var at time.Time
		for k, e := range m {
			if at.IsZero() || e.expires.Before(at) {
				first, at = k, e.expires
			}
		}
		delete(m, first)
	}
	s := secret()
	exp := now.Add(ttl)
	m[hash(s)] = entry{expires: exp, with: with}
	return s, exp
}

// link makes a sign-in code.
func (ss *sessions) link() (code string, expires time.Time) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.add(ss.codes, maxLinks, linkTTL, [sha256.Size]byte{})
}

// Why a code was refused.
var (
	errCodeUnknown = errors.New("This sign-in link is not known, or it has expired. Run `realmsync open` for a new one.")
	errCodeSpent   = errors.New("This sign-in link was used already. If that was not you, the page it opened is signed out now. Run `realmsync open` for a new link.")
)

// redeem spends a sign-in code and starts a session with its page key. A
// code spent before ends the session it started.
func (ss *sessions) redeem(code string) (session, key string, err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := hash(code)
	c, found := ss.codes[k]
	switch {
	case !found || !ss.now().Before(c.expires):
		delete(ss.codes, k)
		return "", "", errCodeUnknown
	case c.with != [sha256.Size]byte{}:
		delete(ss.live, c.with)
		return "", "", errCodeSpent
	}
	key = secret()
	session, _ = ss.add(ss.live, maxSessions, sessionTTL, hash(key))
	c.with = hash(session)
	ss.codes[k] = c // kept until it expires, to notice a second use
	return session, key, nil
}

// pageKey is the page key a request carries: in a header, or in the
// query where the browser sends no headers of the page's choosing.
func pageKey(r *http.Request) string {
	if k := r.Header.Get(keyHeader); k != "" {
		return k
	}
	return r.URL.Query().Get("key")
}

// keyHeader carries the page key.
const keyHeader = "X-Realmsync-Key"

// valid reports whether a request carries the cookie of a live session
// and that session's page key.
func (ss *sessions) valid(r *http.Request) bool {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return false
	}
	key := hash(pageKey(r))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	e, ok := ss.live[hash(c.Value)]
	return ok && ss.now().Before(e.expires) && subtle.ConstantTimeCompare(key[:], e.with[:]) == 1
}

// end ends the session of a request's cookie, if it has one.
func (ss *sessions) end(r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		ss.mu.Lock()
		delete(ss.live, hash(c.Value))
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
// sends the browser on to the page with the page key in the fragment, so
// that the link's URL is left behind.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	session, key, err := s.sessions.redeem(r.URL.Query().Get("code"))
	if err != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(err.Error() + "\n"))
		return
	}
	http.SetCookie(w, sessionCookie(session, sessionTTL))
	http.Redirect(w, r, "/#k="+key, http.StatusSeeOther)
}
