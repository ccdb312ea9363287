package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/realmsync/realmsync/api/web"
)

// signInLink asks for a sign-in link with the token and returns its path
// and query.
func signInLink(t *testing.T, c *client) string {
	t.Helper()
	r := c.do("POST", "/v1/session/link", "")
	var link SessionLink
	if r.status != http.StatusCreated || json.Unmarshal(r.body, &link) != nil {
		t.Fatalf("POST /v1/session/link = %d %s", r.status, r.body)
	}
	u, err := url.Parse(link.URL)
	if err != nil || u.Path != "/signin" || u.Query().Get("code") == "" {
		t.Fatalf("sign-in link %q", link.URL)
	}
	return u.RequestURI()
}

// noToken drops the Authorization header; withCookie sends a cookie.
func noToken(r *http.Request) { r.Header.Del("Authorization") }

func withCookie(value string) func(*http.Request) {
	return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: cookieName, Value: value}) }
}

// withSession sends a session's cookie and page key.
func withSession(cookie, key string) func(*http.Request) {
	return func(r *http.Request) {
		r.AddCookie(&http.Cookie{Name: cookieName, Value: cookie})
		r.Header.Set(keyHeader, key)
	}
}

// signIn follows a sign-in link without the token and returns the
// session cookie it sets and the page key it sends the page.
func signIn(t *testing.T, c *client, link string) (cookie, key string) {
	t.Helper()
	r := c.do("GET", link, "", noToken)
	key, ok := strings.CutPrefix(r.header.Get("Location"), "/#k=")
	if r.status != http.StatusSeeOther || !ok || key == "" {
		t.Fatalf("GET %s = %d, Location %q; want 303 to /#k=<key>", link, r.status, r.header.Get("Location"))
	}
	resp := http.Response{Header: r.header}
	for _, ck := range resp.Cookies() {
		if ck.Name == cookieName {
			if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", ck)
			}
			return ck.Value, key
		}
	}
	t.Fatalf("no session cookie in %v", r.header)
	return "", ""
}

// TestSession: a sign-in link works once; its cookie and page key open
// the API, neither alone does, and they cannot make more links; signing
// out ends the session, and so does a second use of its link.
func TestSession(t *testing.T) {
	_, c := newServer(t)
	noRedirect(t)
	link := signInLink(t, c)
	cookie, key := signIn(t, c, link)

	if r := c.do("GET", "/signin?code=nonsense", "", noToken); r.status != http.StatusUnauthorized {
		t.Errorf("a made-up code = %d; want 401", r.status)
	}
	if r := c.do("GET", "/v1/status", "", noToken, withSession(cookie, key)); r.status != http.StatusOK {
		t.Errorf("status with the session = %d %s", r.status, r.body)
	}
	if r := c.do("GET", "/v1/status?key="+url.QueryEscape(key), "", noToken, withCookie(cookie)); r.status != http.StatusOK {
		t.Errorf("status with the page key in the query = %d %s", r.status, r.body)
	}
	refused := map[string]func(*http.Request){
		"the cookie alone (another local site the browser visits)": withCookie(cookie),
		"a wrong page key":   withSession(cookie, key+"x"),
		"a wrong cookie":     withSession(cookie+"x", key),
		"the page key alone": func(r *http.Request) { r.Header.Set(keyHeader, key) },
	}
	for what, edit := range refused {
		if r := c.do("GET", "/v1/status", "", noToken, edit); r.status != http.StatusUnauthorized {
			t.Errorf("status with %s = %d; want 401", what, r.status)
		}
	}
	if r := c.do("POST", "/v1/session/link", "", noToken, withSession(cookie, key)); r.status != http.StatusForbidden {
		t.Errorf("a session making a link = %d; want 403", r.status)
	}
	cross := func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }
	if r := c.do("POST", "/v1/realms", `{"name":"x"}`, noToken, withSession(cookie, key), cross); r.status != http.StatusForbidden {
		t.Errorf("a cross-origin request with the session = %d; want 403", r.status)
	}
	if r := c.do("DELETE", "/v1/session", "", noToken, withSession(cookie, key)); r.status != http.StatusNoContent {
		t.Errorf("sign out = %d %s", r.status, r.body)
	}
	if r := c.do("GET", "/v1/status", "", noToken, withSession(cookie, key)); r.status != http.StatusUnauthorized {
		t.Errorf("status after signing out = %d; want 401", r.status)
	}

	// Someone races the browser to a link: when the browser comes, it is
	// refused, and what the other one got ends.
	link = signInLink(t, c)
	cookie, key = signIn(t, c, link)
	if r := c.do("GET", link, "", noToken); r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), "used already") {
		t.Errorf("a used link = %d %s; want 401", r.status, r.body)
	}
	if r := c.do("GET", "/v1/status", "", noToken, withSession(cookie, key)); r.status != http.StatusUnauthorized {
		t.Errorf("the session of a link used twice = %d; want 401", r.status)
	}
}

// noRedirect makes the default client hand redirects back, for the test.
func noRedirect(t *testing.T) {
	old := http.DefaultClient.CheckRedirect
	http.DefaultClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	t.Cleanup(func() { http.DefaultClient.CheckRedirect = old })
}

// TestSessionExpiry: codes and sessions end on time, and a full table
// drops the entry that ends first.
func TestSessionExpiry(t *testing.T) {
	ss := newSessions()
	now := time.Unix(1_700_000_000, 0)
	ss.now = func() time.Time { return now }
	code, _ := ss.link()
	now = now.Add(linkTTL)
	if _, _, err := ss.redeem(code); err == nil {
		t.Error("a code redeemed when its time was up")
	}
	code, _ = ss.link()
	session, key, err := ss.redeem(code)
	if err != nil {
		t.Fatal("a fresh code was refused")
	}
	req := httptest.NewRequest("GET", "/", nil)
	withSession(session, key)(req)
	now = now.Add(sessionTTL - time.Second)
	if !ss.valid(req) {
		t.Error("a session ended early")
	}
	now = now.Add(time.Second)
	if ss.valid(req) {
		t.Error("a session outlived sessionTTL")
	}
	var codes []string
	for range maxLinks + 3 {
		c, _ := ss.link()
		codes = append(codes, c)
		now = now.Add(time.Millisecond)
	}
	if len(ss.codes) != maxLinks {
		t.Errorf("%d codes kept; want at most %d", len(ss.codes), maxLinks)
	}
	if _, _, err := ss.redeem(codes[0]); err == nil {
		t.Error("the oldest code survived a full table")
	}
	if _, _, err := ss.redeem(codes[len(codes)-1]); err != nil {
		t.Error("the newest code was dropped")
	}
}

// TestPage: the page's files need no token and come with their strict
// policy; other paths outside the API still do.
func TestPage(t *testing.T) {
	_, c := newServer(t)
	for _, path := range web.Paths() {
		r := c.do("GET", path, "", noToken)
		if r.status != http.StatusOK || r.header.Get("Content-Security-Policy") != web.Policy {
			t.Errorf("GET %s = %d, CSP %q", path, r.status, r.header.Get("Content-Security-Policy"))
		}
		if strings.Contains(string(r.body), "<script>") || strings.Contains(string(r.body), " onclick=") {
			t.Errorf("%s holds an inline script", path)
		}
	}
	if r := c.do("GET", "/index.html", "", noToken); r.status != http.StatusUnauthorized {
		t.Errorf("GET /index.html without a token = %d; want 401", r.status)
	}
	if r := c.do("GET", "/", "", noToken, func(r *http.Request) { r.Host = "evil.example" }); r.status != http.StatusMisdirectedRequest {
		t.Errorf("the page under a foreign Host = %d; want 421", r.status)
	}
}
