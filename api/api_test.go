package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const testToken = "s3cret-token"

// fake is a Backend in memory: one realm named "home", holding messages.
type fake struct {
	mu       sync.Mutex
	messages []Message
	calls    int           // calls that change something
	change   chan struct{} // closed at the next change
}

var _ Backend = (*fake)(nil)

func (f *fake) Status() Status {
	return Status{PeerID: "12D3KooWfake", Name: "fake", Addrs: []string{}, Version: "test", Realms: 1}
}

var home = Realm{ID: strings.Repeat("ab", 32), Name: "home", Role: "admin", Members: 1}

func (f *fake) find(realm string) error {
	if realm != home.ID && realm != home.Name {
		return Errorf(http.StatusNotFound, CodeNotFound, "no realm %q", realm)
	}
	return nil
}

func (f *fake) changed() { f.mu.Lock(); f.calls++; f.mu.Unlock() }

func (f *fake) Realms() ([]Realm, error) { return []Realm{home}, nil }
func (f *fake) CreateRealm(_ context.Context, name string) (Realm, error) {
	f.changed()
	return Realm{ID: strings.Repeat("cd", 32), Name: name, Role: "admin", Members: 1}, nil
}
func (f *fake) Realm(realm string) (Realm, error) { return home, f.find(realm) }
func (f *fake) Members(realm string) ([]Member, error) {
	return []Member{{PeerID: "12D3KooWfake", Name: "fake", Role: "admin", Online: true}}, f.find(realm)
}
func (f *fake) SetRole(_ context.Context, realm, peer, role string) (Member, error) {
	if err := f.find(realm); err != nil {
		return Member{}, err
	}
	f.changed()
	return Member{PeerID: peer, Role: role}, nil
}
func (f *fake) RemoveMember(_ context.Context, realm, peer string) error {
	if err := f.find(realm); err != nil {
		return err
	}
	f.changed()
	return nil
}
func (f *fake) Send(_ context.Context, realm, text string) (Message, error) {
	if err := f.find(realm); err != nil {
		return Message{}, err
	}
	f.mu.Lock()
	f.calls++
	m := Message{ID: fmt.Sprint("m", len(f.messages)), Author: "12D3KooWfake", Text: text, SentAt: time.Unix(1, 0).UTC()}
	f.messages = append(f.messages, m)
	f.mu.Unlock()
	f.notify()
	return m, nil
}
func (f *fake) Messages(realm, after string, limit int) ([]Message, error) {
	if err := f.find(realm); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Message
	seen := after == ""
	for _, m := range f.messages {
		if seen && len(out) < limit {
			out = append(out, m)
		}
		seen = seen || m.ID == after
	}
	if !seen {
		return nil, Errorf(http.StatusNotFound, CodeNotFound, "no message %q", after)
	}
	return out, nil
}
func (f *fake) Arrived(realm string, since uint64, limit int) ([]Message, uint64, error) {
	if err := f.find(realm); err != nil {
		return nil, 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if since == math.MaxUint64 || since >= uint64(len(f.messages)) {
		return nil, uint64(len(f.messages)), nil
	}
	out := f.messages[since:min(len(f.messages), int(since)+limit)]
	return slices.Clone(out), since + uint64(len(out)), nil
}
func (f *fake) PutObject(_ context.Context, realm, coll, id string, fields map[string]json.RawMessage) (Object, error) {
	f.changed()
	return Object{ID: id, Fields: fields}, f.find(realm)
}
func (f *fake) Object(realm, coll, id string) (Object, error) {
	return Object{}, Errorf(http.StatusNotFound, CodeNotFound, "no object %s/%s", coll, id)
}
func (f *fake) DeleteObject(_ context.Context, realm, coll, id string) error {
	return Errorf(http.StatusNotFound, CodeNotFound, "no object %s/%s", coll, id)
}
func (f *fake) Objects(realm, coll string) ([]Object, error) { return nil, f.find(realm) }
func (f *fake) CreateInvite(_ context.Context, realm, role string, d time.Duration, uses int) (Invite, error) {
	f.changed()
	return Invite{OfferID: "00ff", Token: "REALMSYNC-TEST", Role: role, ExpiresAt: time.Unix(0, 0).Add(d).UTC(), MaxUses: uses}, f.find(realm)
}
func (f *fake) Invites(realm string) ([]Invite, error) { return nil, f.find(realm) }
func (f *fake) RevokeInvite(_ context.Context, realm, offer string) error {
	f.changed()
	return f.find(realm)
}
func (f *fake) InviteQR(realm, offer string) ([]byte, error) {
	return []byte("\x89PNG fake"), f.find(realm)
}
func (f *fake) Accept(_ context.Context, token string) (Realm, error) {
	if token == "REALMSYNC-EXPIRED" {
		return Realm{}, &Error{Status: http.StatusGone, Code: "expired", Detail: "the offer has expired"}
	}
	f.changed()
	return home, nil
}
func (f *fake) Changed(realm string) (<-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.change == nil {
		f.change = make(chan struct{})
	}
	return f.change, f.find(realm)
}

func (f *fake) ObjectChanges(realm string, since uint64) ([]ObjectChange, uint64, error) {
	return nil, 0, f.find(realm)
}

// notify closes the change channel, as a node does at a change.
func (f *fake) notify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.change != nil {
		close(f.change)
		f.change = nil
	}
}

func (f *fake) AcceptImage(_ context.Context, img []byte) (Realm, error) {
	return Realm{}, Errorf(http.StatusBadRequest, "no_qr_code", "no QR code found in the image")
}

// client sends requests to a test server on a loopback listener.
type client struct {
	t    *testing.T
	base string
}

func newServer(t *testing.T) (*fake, *client) {
	f := &fake{}
	srv := httptest.NewServer(NewServer(f, testToken, nil, nil))
	t.Cleanup(srv.Close)
	return f, &client{t: t, base: srv.URL}
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; edit may change it before it goes.
func (c *client) do(method, path, body string, edit ...func(*http.Request)) reply {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, e := range edit {
		e(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

// problemCode returns the code of a problem+json reply.
func (r reply) problemCode(t *testing.T) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("error reply of type %q: %s", ct, r.body)
	}
	var p problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Status != r.status || p.Code == "" || p.Title == "" || p.Type == "" || p.Detail == "" {
		t.Fatalf("incomplete problem: %s", r.body)
	}
	return p.Code
}

func TestRoutes(t *testing.T) {
	_, c := newServer(t)
	cases := []struct {
		method, path, body string
		status             int
		want               string // a piece of the body
	}{
		{"GET", "/v1/health", "", 200, `"ok": true`},
		{"GET", "/v1/status", "", 200, `"peer_id": "12D3KooWfake"`},
		{"GET", "/v1/realms", "", 200, `"name": "home"`},
		{"POST", "/v1/realms", `{"name":"work"}`, 201, `"name": "work"`},
		{"GET", "/v1/realms/home", "", 200, `"role": "admin"`},
		{"GET", "/v1/realms/" + home.ID, "", 200, `"name": "home"`},
		{"GET", "/v1/realms/home/members", "", 200, `"online": true`},
		{"PATCH", "/v1/realms/home/members/12D3KooWx", `{"role":"reader"}`, 200, `"role": "reader"`},
		{"DELETE", "/v1/realms/home/members/12D3KooWx", "", 204, ""},
		{"POST", "/v1/realms/home/messages", `{"text":"hello"}`, 201, `"text": "hello"`},
		{"GET", "/v1/realms/home/messages?limit=10", "", 200, `"messages": [`},
		{"PUT", "/v1/realms/home/objects/notes/n1", `{"title":"x","n":3}`, 200, `"n": 3`},
		{"GET", "/v1/realms/home/objects/notes/n1", "", 404, `"code":"not_found"`},
		{"DELETE", "/v1/realms/home/objects/notes/n1", "", 404, `"code":"not_found"`},
		{"GET", "/v1/realms/home/objects/notes", "", 200, `"objects": []`},
		{"POST", "/v1/realms/home/invites", `{}`, 201, `"role": "writer"`},
		{"POST", "/v1/realms/home/invites", `{"role":"reader","expires_in":"1h","max_uses":3}`, 201, `"max_uses": 3`},
		{"GET", "/v1/realms/home/invites", "", 200, `"invites": []`},
		{"DELETE", "/v1/realms/home/invites/00ff", "", 204, ""},
		{"GET", "/v1/realms/home/invites/00ff/qr.png", "", 200, "PNG"},
		{"POST", "/v1/invites/accept", `{"token":"REALMSYNC-OK"}`, 201, `"name": "home"`},
		{"POST", "/v1/invites/accept", `{"token":"REALMSYNC-EXPIRED"}`, 410, `"code":"expired"`},
		{"GET", "/v1/realms/nowhere", "", 404, `"code":"not_found"`},
		{"GET", "/v1/nothing", "", 404, `"code":"not_found"`},
		{"DELETE", "/v1/realms", "", 405, `"code":"method_not_allowed"`},
	}
	for _, tc := range cases {
		r := c.do(tc.method, tc.path, tc.body)
		if r.status != tc.status || !strings.Contains(string(r.body), tc.want) {
			t.Errorf("%s %s = %d %s; want %d with %s", tc.method, tc.path, r.status, r.body, tc.status, tc.want)
		}
		if r.status >= 400 {
			r.problemCode(t)
		}
	}
}

// TestRefusals: each bad request gets its status and code, and changes
// nothing.
func TestRefusals(t *testing.T) {
	f, c := newServer(t)
	noToken := func(r *http.Request) { r.Header.Del("Authorization") }
	wrongToken := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken+"x") }
	foreignHost := func(r *http.Request) { r.Host = "evil.example:7700" }
	crossOrigin := func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") }
	crossSite := func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }
	asText := func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }
	big := `{"text":"` + strings.Repeat("x", MaxBodySize) + `"}`
	cases := []struct {
		name, method, path, body string
		edit                     func(*http.Request)
		status                   int
		code                     string
	}{
		{"no token", "POST", "/v1/realms", `{"name":"x"}`, noToken, 401, CodeUnauthorized},
		{"wrong token", "POST", "/v1/realms", `{"name":"x"}`, wrongToken, 401, CodeUnauthorized},
		{"foreign host", "POST", "/v1/realms", `{"name":"x"}`, foreignHost, 421, CodeBadHost},
		{"foreign host, health", "GET", "/v1/health", "", foreignHost, 421, CodeBadHost},
		{"cross origin", "POST", "/v1/realms/home/messages", `{"text":"x"}`, crossOrigin, 403, CodeForbidden},
		{"cross site", "POST", "/v1/realms/home/messages", `{"text":"x"}`, crossSite, 403, CodeForbidden},
		{"malformed", "POST", "/v1/realms/home/messages", `{"text":`, nil, 400, CodeBadRequest},
		{"unknown field", "POST", "/v1/realms/home/messages", `{"txt":"x"}`, nil, 400, CodeBadRequest},
		{"two values", "POST", "/v1/realms/home/messages", `{"text":"x"}{}`, nil, 400, CodeBadRequest},
		{"empty text", "POST", "/v1/realms/home/messages", `{"text":"  "}`, nil, 400, CodeBadRequest},
		{"too large", "POST", "/v1/realms/home/messages", big, nil, 413, CodeTooLarge},
		{"not json", "POST", "/v1/realms", `{"name":"x"}`, asText, 415, CodeBadRequest},
		{"bad role", "PATCH", "/v1/realms/home/members/p", `{"role":"owner"}`, nil, 400, CodeBadRequest},
		{"bad expiry", "POST", "/v1/realms/home/invites", `{"expires_in":"soon"}`, nil, 400, CodeBadRequest},
		{"bad uses", "POST", "/v1/realms/home/invites", `{"max_uses":0}`, nil, 400, CodeBadRequest},
		{"bad limit", "GET", "/v1/realms/home/messages?limit=0", "", nil, 400, CodeBadRequest},
		{"no fields", "PUT", "/v1/realms/home/objects/c/o", `{}`, nil, 400, CodeBadRequest},
		{"empty token", "POST", "/v1/invites/accept", `{"token":""}`, nil, 400, CodeBadRequest},
		{"unreadable image", "POST", "/v1/invites/accept", "not an image",
			func(r *http.Request) { r.Header.Set("Content-Type", "image/png") }, 400, "no_qr_code"},
	}
	for _, tc := range cases {
		var edits []func(*http.Request)
		if tc.edit != nil {
			edits = append(edits, tc.edit)
		}
		r := c.do(tc.method, tc.path, tc.body, edits...)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, r.status, tc.status, r.body)
			continue
		}
		if code := r.problemCode(t); code != tc.code {
			t.Errorf("%s: code %q, want %q", tc.name, code, tc.code)
		}
	}
	if f.calls != 0 {
		t.Errorf("refused requests made %d changes", f.calls)
	}
	if r := c.do("GET", "/v1/health", "", noToken); r.status != 200 {
		t.Errorf("health without a token: %d", r.status)
	}
}

// TestHeaders: every answer carries the protective headers.
func TestHeaders(t *testing.T) {
	_, c := newServer(t)
	for _, path := range []string{"/v1/health", "/v1/status", "/v1/nothing"} {
		r := c.do("GET", path, "")
		for _, h := range []string{"X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Cache-Control", "Referrer-Policy"} {
			if r.header.Get(h) == "" {
				t.Errorf("%s: no %s header", path, h)
			}
		}
	}
	if r := c.do("DELETE", "/v1/realms", ""); r.header.Get("Allow") != "GET, POST" {
		t.Errorf("405 Allow = %q", r.header.Get("Allow"))
	}
}

func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:7700": true, "localhost:7700": true, "[::1]:7700": true, "127.0.0.1": true,
		"LOCALHOST": true, "127.1.2.3:80": true,
		"evil.example": false, "10.0.0.1:7700": false, "localhost.evil.example:7700": false, "": false,
	} {
		if got := loopbackHost(host); got != want {
			t.Errorf("loopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// sseEvent is one event read from a stream.
type sseEvent struct{ event, id, data string }

// readEvents reads events from an event stream until n have come.
func readEvents(t *testing.T, body io.Reader, n int) []sseEvent {
	t.Helper()
	sc := bufio.NewScanner(body)
	var out []sseEvent
	var cur sseEvent
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.event != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.event = line[len("event: "):]
		case strings.HasPrefix(line, "id: "):
			cur.id = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[len("data: "):]
		}
	}
	if len(out) < n {
		t.Fatalf("stream ended after %d of %d events: %v", len(out), n, sc.Err())
	}
	return out
}

// TestEvents: new messages arrive as events; a stream resumed with
// Last-Event-ID gets what was sent while it was away.
func TestEvents(t *testing.T) {
	f, c := newServer(t)
	f.Send(context.Background(), "home", "before")
	open := func(last string) *http.Response {
		req, _ := http.NewRequest("GET", c.base+"/v1/realms/home/events", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return resp
	}
	resp := open("")
	go func() {
		time.Sleep(50 * time.Millisecond)
		f.Send(context.Background(), "home", "live")
	}()
	ev := readEvents(t, resp.Body, 1)
	resp.Body.Close()
	if ev[0].event != "message" || ev[0].id != "@2" || !strings.Contains(ev[0].data, `"text":"live"`) {
		t.Fatalf("first event: %+v (the message from before connecting must not come)", ev[0])
	}
	f.Send(context.Background(), "home", "away 1")
	f.Send(context.Background(), "home", "away 2")
	resp = open("@2")
	ev = readEvents(t, resp.Body, 2)
	resp.Body.Close()
	if !strings.Contains(ev[0].data, `"away 1"`) || ev[0].id != "" || !strings.Contains(ev[1].data, `"away 2"`) || ev[1].id != "@4" {
		t.Fatalf("resumed from a position: %+v", ev)
	}
	// A message id, as a client has after reading GET messages: the
	// messages after it in the realm's order.
	resp = open("m1")
	defer resp.Body.Close()
	ev = readEvents(t, resp.Body, 2)
	if !strings.Contains(ev[0].data, `"id":"m2"`) || !strings.Contains(ev[1].data, `"id":"m3"`) {
		t.Fatalf("resumed after a message: %+v", ev)
	}
	if r := c.do("GET", "/v1/realms/home/events", "", func(r *http.Request) { r.Header.Set("Last-Event-ID", "nope") }); r.status != 404 {
		t.Errorf("resume after an unknown id = %d %s", r.status, r.body)
	}
}

// TestOpenAPI: the document describes exactly the routes there are.
func TestOpenAPI(t *testing.T) {
	f := &fake{}
	srv := NewServer(f, testToken, nil, nil)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c := &client{t: t, base: ts.URL}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	c.decode("GET", "/v1/openapi.json", "", 200, &doc)
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	routed := slices.Clone(srv.table)
	slices.Sort(documented)
	slices.Sort(routed)
	if !slices.Equal(documented, routed) {
		t.Errorf("documented and routed differ:\ndocumented %v\nrouted     %v", documented, routed)
	}
}
