package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/realmsync/realmsync/daemon"
)

// nodeAPI starts a real node on loopback and its API on a loopback
// listener.
func nodeAPI(t *testing.T, name string) *client {
	t.Helper()
	n, err := daemon.New(daemon.Config{DataDir: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	srv := httptest.NewServer(NewServer(NewNodeBackend(n, "test"), testToken, nil, nil))
	t.Cleanup(srv.Close)
	return &client{t: t, base: srv.URL}
}

// decode sends a request that must answer with status, and decodes the
// answer into v.
func (c *client) decode(method, path, body string, status int, v any) {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.status != status {
		c.t.Fatalf("%s %s = %d %s; want %d", method, path, r.status, r.body, status)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			c.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// eventually retries check until it returns true or 20 s pass.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestChatThroughAPI: two nodes, each behind its API: a creates a realm
// and an invite, b accepts it, both chat and see the same conversation;
// a third node joins by the invite's QR code; a removes b.
func TestChatThroughAPI(t *testing.T) {
	a, b := nodeAPI(t, "alice"), nodeAPI(t, "bob")
	var realm Realm
	a.decode("POST", "/v1/realms", `{"name":"kitchen"}`, 201, &realm)

	var inv Invite
	a.decode("POST", "/v1/realms/kitchen/invites", `{"role":"writer","max_uses":2}`, 201, &inv)
	if want := "/v1/realms/kitchen/invites/" + inv.OfferID + "/qr.png"; inv.QRURL != want {
		t.Errorf("qr_url = %q, want %q", inv.QRURL, want)
	}
	var joined Realm
	b.decode("POST", "/v1/invites/accept", `{"token":"`+inv.Token+`"}`, 201, &joined)
	if joined.ID != realm.ID {
		t.Fatalf("joined %s, want %s", joined.ID, realm.ID)
	}
	eventually(t, "b holds the realm", func() bool {
		var r Realm
		b.decode("GET", "/v1/realms/"+realm.ID, "", 200, &r)
		return r.Name == "kitchen" && r.Role == "writer"
	})

	// A writer may not invite or change roles.
	if r := b.do("POST", "/v1/realms/kitchen/invites", `{}`); r.status != 403 || r.problemCode(t) != "not_permitted" {
		t.Errorf("invite by a writer = %d %s", r.status, r.body)
	}
	a.decode("POST", "/v1/realms/kitchen/messages", `{"text":"hi from alice"}`, 201, nil)
	b.decode("POST", "/v1/realms/kitchen/messages", `{"text":"hi from bob"}`, 201, nil)
	var seen [2][]Message
	eventually(t, "both see both messages", func() bool {
		for i, c := range []*client{a, b} {
			var got struct{ Messages []Message }
			c.decode("GET", "/v1/realms/kitchen/messages", "", 200, &got)
			seen[i] = got.Messages
		}
		return len(seen[0]) == 2 && len(seen[1]) == 2
	})
	for i := range 2 {
		if seen[0][i] != seen[1][i] {
			t.Errorf("message %d: a shows %+v, b shows %+v", i, seen[0][i], seen[1][i])
		}
	}
	if seen[0][0].AuthorName == "" || seen[0][0].Text == "" {
		t.Errorf("message without author or text: %+v", seen[0][0])
	}

	// A third node joins by the QR code of the same invite.
	png := a.do("GET", inv.QRURL, "")
	if png.status != 200 || png.header.Get("Content-Type") != "image/png" {
		t.Fatalf("qr.png = %d %s", png.status, png.header.Get("Content-Type"))
	}
	c := nodeAPI(t, "carol")
	r := c.do("POST", "/v1/invites/accept", string(png.body), func(r *http.Request) { r.Header.Set("Content-Type", "image/png") })
	if r.status != 201 {
		t.Fatalf("accept by QR code = %d %s", r.status, r.body)
	}
	// Bob again: already a member.
	if r := b.do("POST", "/v1/invites/accept", `{"token":"`+inv.Token+`"}`); r.status != 409 || r.problemCode(t) != "already_member" {
		t.Errorf("accepting as a member = %d %s", r.status, r.body)
	}
	// The invite is used up now.
	d := nodeAPI(t, "dave")
	if r := d.do("POST", "/v1/invites/accept", `{"token":"`+inv.Token+`"}`); r.status != 410 || r.problemCode(t) != "used_up" {
		t.Errorf("third use of a two-use invite = %d %s", r.status, r.body)
	}

	var members struct{ Members []Member }
	eventually(t, "a sees three members", func() bool {
		a.decode("GET", "/v1/realms/kitchen/members", "", 200, &members)
		return len(members.Members) == 3
	})
	var bob Member
	for _, m := range members.Members {
		if m.Name == "bob" {
			bob = m
		}
	}
	a.decode("DELETE", "/v1/realms/kitchen/members/"+bob.PeerID, "", 204, nil)
	a.decode("GET", "/v1/realms/kitchen/members", "", 200, &members)
	if len(members.Members) != 2 {
		t.Errorf("after removing bob: %d members", len(members.Members))
	}
	if r := a.do("DELETE", "/v1/realms/kitchen/members/"+bob.PeerID, ""); r.status != 404 {
		t.Errorf("removing bob twice = %d %s", r.status, r.body)
	}
}

// TestObjectsThroughAPI: objects are set field by field, read, listed and
// deleted.
func TestObjectsThroughAPI(t *testing.T) {
	a := nodeAPI(t, "alice")
	a.decode("POST", "/v1/realms", `{"name":"notes"}`, 201, nil)
	a.decode("PUT", "/v1/realms/notes/objects/todo/t1", `{"title":"milk","done":false}`, 200, nil)
	var o Object
	a.decode("PUT", "/v1/realms/notes/objects/todo/t1", `{"done": true}`, 200, &o)
	if !bytes.Equal(o.Fields["title"], []byte(`"milk"`)) || !bytes.Equal(o.Fields["done"], []byte(`true`)) {
		t.Errorf("object after two puts: %+v", o.Fields)
	}
	var list struct{ Objects []Object }
	a.decode("GET", "/v1/realms/notes/objects/todo", "", 200, &list)
	if len(list.Objects) != 1 || list.Objects[0].ID != "t1" {
		t.Errorf("list: %+v", list.Objects)
	}
	// Object events: a change and a delete, as they happen.
	req, _ := http.NewRequest("GET", a.base+"/v1/realms/notes/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a.decode("PUT", "/v1/realms/notes/objects/todo/t1", `{"title":"oat milk"}`, 200, nil)
	a.decode("DELETE", "/v1/realms/notes/objects/todo/t1", "", 204, nil)
	ev := readEvents(t, resp.Body, 2)
	var changed, deleted ObjectChange
	json.Unmarshal([]byte(ev[0].data), &changed)
	json.Unmarshal([]byte(ev[1].data), &deleted)
	if ev[0].event != "object" || changed.ID != "t1" || changed.Object == nil || string(changed.Object.Fields["title"]) != `"oat milk"` {
		t.Errorf("change event: %+v", ev[0])
	}
	if ev[1].event != "object" || !deleted.Deleted || deleted.Object != nil {
		t.Errorf("delete event: %+v", ev[1])
	}
	if r := a.do("GET", "/v1/realms/notes/objects/todo/t1", ""); r.status != 404 {
		t.Errorf("deleted object = %d %s", r.status, r.body)
	}
}

// TestAcceptUnreachable: an invite whose nodes are all gone is refused
// with 502 and the addresses tried.
func TestAcceptUnreachable(t *testing.T) {
	n, err := daemon.New(daemon.Config{DataDir: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(NewNodeBackend(n, "test"), testToken, nil, nil))
	a := &client{t: t, base: srv.URL}
	a.decode("POST", "/v1/realms", `{"name":"far"}`, 201, nil)
	var inv Invite
	a.decode("POST", "/v1/realms/far/invites", `{}`, 201, &inv)
	srv.Close()
	n.Close()

	b := nodeAPI(t, "bob")
	r := b.do("POST", "/v1/invites/accept", `{"token":"`+inv.Token+`"}`)
	if r.status != 502 || r.problemCode(t) != "unreachable" || !strings.Contains(string(r.body), "127.0.0.1") {
		t.Errorf("accepting an invite of a node that is gone = %d %s", r.status, r.body)
	}
	var realms struct{ Realms []Realm }
	b.decode("GET", "/v1/realms", "", 200, &realms)
	if len(realms.Realms) != 0 {
		t.Errorf("a refused accept left realms: %+v", realms.Realms)
	}
}
