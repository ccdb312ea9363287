package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"github.com/libp2p/go-libp2p/core/network"
	"sync"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/realmsync/realmsync/crdt"
	"github.com/realmsync/realmsync/invite"
)

// offer has a issue an offer and checks that it survives its text form.
func offer(t *testing.T, a *Node, id crdt.RealmID, role crdt.Role, uses uint16) *invite.Offer {
	t.Helper()
	o, err := a.CreateOffer(id, role, time.Hour, uses)
	if err != nil {
		t.Fatal(err)
	}
	got, err := invite.Parse(o.Text())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// invited has each node accept an offer of a's realm for role.
func invited(t *testing.T, a *Node, id crdt.RealmID, role crdt.Role, nodes ...*Node) {
	t.Helper()
	o := offer(t, a, id, role, uint16(len(nodes)))
	for _, n := range nodes {
		if _, err := n.Accept(context.Background(), o); err != nil {
			t.Fatalf("%s accepts: %v", n.cfg.Name, err)
		}
	}
}

func role(t *testing.T, n *Node, id crdt.RealmID, of *Node) crdt.Role {
	t.Helper()
	var r crdt.Role
	if err := n.View(id, func(realm *crdt.Realm) error { r = realm.Role(of.Author()); return nil }); err != nil {
		t.Fatal(err)
	}
	return r
}

// refusedWith checks that err is a refusal with the code of want.
func refusedWith(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	if invite.Code(err) != invite.Code(want) {
		t.Fatalf("code %q, want %q", invite.Code(err), invite.Code(want))
	}
}

// TestAcceptThroughIssuer: b accepts a's offer, is a member with the role
// offered, catches up, and chats both ways with a.
func TestAcceptThroughIssuer(t *testing.T) {
	ctx := context.Background()
	a, b := newTestNode(t, "a"), newTestNode(t, "b")
	id := createRealm(t, a, "family")
	o := offer(t, a, id, crdt.RoleWriter, 1)
	got, err := b.Accept(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if got != id {
		t.Fatalf("joined %s, want %s", got, id)
	}
	converge(t, id, a, b)
	if r := role(t, b, id, b); r != crdt.RoleWriter {
		t.Fatalf("b is a %s, want writer", r)
	}
	if _, err := b.Write(ctx, id, message("hello from b")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(ctx, id, message("hello from a")); err != nil {
		t.Fatal(err)
	}
	converge(t, id, a, b)
	a.View(id, func(r *crdt.Realm) error {
		if uses, _ := r.Offer(o.ID); uses != 1 {
			t.Errorf("the offer counts %d uses, want 1", uses)
		}
		return nil
	})
	_, err = b.Accept(ctx, o)
	refusedWith(t, err, invite.ErrAlreadyMember)
}

// TestAcceptThroughOtherAdmin: the issuer is offline; another admin that
// the offer names honours it.
func TestAcceptThroughOtherAdmin(t *testing.T) {
	ctx := context.Background()
	a, c, b := newTestNode(t, "a"), newTestNode(t, "c"), newTestNode(t, "b")
	id := createRealm(t, a, "family")
	joined(t, a, c, id, crdt.RoleAdmin)
	o := offer(t, a, id, crdt.RoleReader, 1)
	if len(o.Nodes) != 2 || o.Nodes[1].Key != c.Author() {
		t.Fatalf("the offer names %d nodes, want a and c", len(o.Nodes))
	}
	a.Close()

	if _, err := b.Accept(ctx, o); err != nil {
		t.Fatal(err)
	}
	converge(t, id, c, b)
	if r := role(t, c, id, b); r != crdt.RoleReader {
		t.Fatalf("b is a %s, want reader", r)
	}
}

// TestOfferUsedUp: a single-use offer admits one node, and refuses the
// next.
func TestOfferUsedUp(t *testing.T) {
	ctx := context.Background()
	a, b, d := newTestNode(t, "a"), newTestNode(t, "b"), newTestNode(t, "d")
	id := createRealm(t, a, "once")
	o := offer(t, a, id, crdt.RoleWriter, 1)
	if _, err := b.Accept(ctx, o); err != nil {
		t.Fatal(err)
	}
	before := digest(t, a, id)
	_, err := d.Accept(ctx, o)
	refusedWith(t, err, invite.ErrUsedUp)
	if digest(t, a, id) != before {
		t.Error("a refusal changed the realm")
	}
	if _, err := d.replica(id); err == nil {
		t.Error("d holds the realm after a refusal")
	}
}

// TestOfferPresentedAgain: an invitee presents a single-use offer to
// every admin it names at once, so an admin can meet the request after
// another admin's grant reached it by gossip. It answers as if it had
// granted it (the invitee's role, the realm's keys) and writes nothing;
// the offer stays used once, and refuses anybody else.
func TestOfferPresentedAgain(t *testing.T) {
	ctx := context.Background()
	a, c, b, d := newTestNode(t, "a"), newTestNode(t, "c"), newTestNode(t, "b"), newTestNode(t, "d")
	id := createRealm(t, a, "family")
	joined(t, a, c, id, crdt.RoleAdmin)
	o := offer(t, a, id, crdt.RoleWriter, 1)
	if _, err := b.Accept(ctx, o); err != nil {
		t.Fatal(err)
	}
	converge(t, id, a, c, b)
	before := digest(t, c, id)
	req := (&invite.Request{Offer: o.Marshal(), Name: "b"}).Marshal()
	for _, admin := range []*Node{a, c} {
		resp := admin.honour(b.host.ID(), req)
		if resp.Code != "" || resp.Role != crdt.RoleWriter || resp.Realm != id || len(resp.Keys) == 0 {
			t.Fatalf("%s answered %+v, want b admitted as a writer with the realm's keys", admin.cfg.Name, resp)
		}
	}
	if digest(t, c, id) != before || digest(t, a, id) != before {
		t.Error("answering a member's request again wrote to the realm")
	}
	c.View(id, func(r *crdt.Realm) error {
		if uses, _ := r.Offer(o.ID); uses != 1 {
			t.Errorf("the offer counts %d uses, want 1", uses)
		}
		return nil
	})
	_, err := d.Accept(ctx, o)
	refusedWith(t, err, invite.ErrUsedUp)
}

// TestOfferUsedAtOnce: two nodes present a single-use offer at the same
// moment to the same node: one is admitted.
func TestOfferUsedAtOnce(t *testing.T) {
	ctx := context.Background()
	a, b, d := newTestNode(t, "a"), newTestNode(t, "b"), newTestNode(t, "d")
	id := createRealm(t, a, "once")
	o := offer(t, a, id, crdt.RoleWriter, 1)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range []*Node{b, d} {
		wg.Go(func() { _, errs[i] = n.Accept(ctx, o) })
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("want exactly one admitted: %v, %v", errs[0], errs[1])
	}
	for _, err := range errs {
		if err != nil {
			refusedWith(t, err, invite.ErrUsedUp)
		}
	}
}

// TestOfferExpires: the honouring node's clock decides.
func TestOfferExpires(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a, err := New(Config{DataDir: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Name: "a",
		Logger: testLogger(t, "a"), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b := newTestNode(t, "b")
	id := createRealm(t, a, "short")
	o := offer(t, a, id, crdt.RoleWriter, 5)
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	_, err = b.Accept(ctx, o)
	refusedWith(t, err, invite.ErrExpired)
}

// TestOfferRevoked: once an admin revokes an offer, it admits nobody.
func TestOfferRevoked(t *testing.T) {
	ctx := context.Background()
	a, b := newTestNode(t, "a"), newTestNode(t, "b")
	id := createRealm(t, a, "revoked")
	o := offer(t, a, id, crdt.RoleWriter, 5)
	if _, err := a.Write(ctx, id, &crdt.RevokeOffer{Offer: o.ID}); err != nil {
		t.Fatal(err)
	}
	_, err := b.Accept(ctx, o)
	refusedWith(t, err, invite.ErrRevoked)
}

// TestOfferAttenuation: a writer cannot issue an offer, and an offer a
// writer signs by hand, for admin, is refused.
func TestOfferAttenuation(t *testing.T) {
	ctx := context.Background()
	a, w, b := newTestNode(t, "a"), newTestNode(t, "w"), newTestNode(t, "b")
	id := createRealm(t, a, "roles")
	joined(t, a, w, id, crdt.RoleWriter)
	_, err := w.CreateOffer(id, crdt.RoleWriter, time.Hour, 1)
	refusedWith(t, err, invite.ErrNotPermitted)

	// w signs an offer for admin by hand, naming itself and a.
	o := offer(t, a, id, crdt.RoleAdmin, 1)
	o.Issuer = w.Author()
	o.Nodes = []invite.Node{{Key: w.Author(), Addrs: w.host.Addrs()}, {Key: a.Author(), Addrs: a.host.Addrs()}}
	rand.Read(o.ID[:])
	if err := o.Sign(w.priv); err != nil {
		t.Fatal(err)
	}
	_, err = b.Accept(ctx, o)
	refusedWith(t, err, invite.ErrNotPermitted)
}

// TestOfferUnreachable: when no node named answers, the error lists the
// addresses tried.
func TestOfferUnreachable(t *testing.T) {
	ctx := context.Background()
	a, b := newTestNode(t, "a"), newTestNode(t, "b")
	id := createRealm(t, a, "gone")
	o := offer(t, a, id, crdt.RoleWriter, 1)
	a.Close()
	_, err := b.Accept(ctx, o)
	var ue *invite.UnreachableError
	if !errors.As(err, &ue) || len(ue.Tried) == 0 {
		t.Fatalf("got %v, want an unreachable error listing addresses", err)
	}
	refusedWith(t, err, invite.ErrUnreachable)
}

// TestLastUseAcrossPartition: two admins cut apart each honour the last
// use of a single-use offer. Both grants stand: once the halves meet
// again, both invitees are members on every replica and the offer counts
// two uses of one (see the package doc).
func TestLastUseAcrossPartition(t *testing.T) {
	ctx := context.Background()
	nt := newNet(t)
	a, c := nt.add("a", time.Second), nt.add("c", time.Second)
	b, d := nt.add("b", time.Second), nt.add("d", time.Second)
	id := createRealm(t, a, "split")
	joined(t, a, c, id, crdt.RoleAdmin)
	o := offer(t, a, id, crdt.RoleWriter, 1)

	nt.split([]*Node{a, b}, []*Node{c, d})
	if _, err := b.Accept(ctx, o); err != nil {
		t.Fatalf("b through a: %v", err)
	}
	if _, err := d.Accept(ctx, o); err != nil {
		t.Fatalf("d through c: %v", err)
	}

	nt.heal([]*Node{a, b}, []*Node{c, d})
	connect(t, a, c)
	converge(t, id, a, b, c, d)
	for _, n := range []*Node{a, b, c, d} {
		n.View(id, func(r *crdt.Realm) error {
			if uses, _ := r.Offer(o.ID); uses != 2 {
				t.Errorf("%s counts %d uses, want 2", n.cfg.Name, uses)
			}
			for _, m := range []*Node{b, d} {
				if got := r.Role(m.Author()); got != crdt.RoleWriter {
					t.Errorf("%s sees %s as a %s, want writer", n.cfg.Name, m.cfg.Name, got)
				}
			}
			return nil
		})
	}
}

// TestOfferList: the issuer lists its offers with their uses, and a
// revoke shows there and everywhere.
func TestOfferList(t *testing.T) {
	ctx := context.Background()
	a, b := newTestNode(t, "a"), newTestNode(t, "b")
	id := createRealm(t, a, "listed")
	first := offer(t, a, id, crdt.RoleWriter, 2)
	second := offer(t, a, id, crdt.RoleReader, 1)
	if _, err := b.Accept(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeOffer(ctx, id, second.ID); err != nil {
		t.Fatal(err)
	}
	list, err := a.Offers(id)
	if err != nil {
		t.Fatal(err)
	}
	got := map[crdt.OfferID]OfferState{}
	for _, s := range list {
		got[s.Offer.ID] = s
	}
	if len(list) != 2 || got[first.ID].Uses != 1 || got[first.ID].Revoked ||
		got[second.ID].Uses != 0 || !got[second.ID].Revoked {
		t.Fatalf("offers: %+v", list)
	}
	if got[first.ID].Offer.Text() != first.Text() {
		t.Error("the listed offer is not the one issued")
	}
	converge(t, id, a, b)
	b.View(id, func(r *crdt.Realm) error {
		if _, revoked := r.Offer(second.ID); !revoked {
			t.Error("b does not see the revoke")
		}
		return nil
	})
}

// TestMembership: an admin changes a member's role and removes another;
// a member leaves by itself.
func TestMembership(t *testing.T) {
	ctx := context.Background()
	a, b, c, d := newTestNode(t, "a"), newTestNode(t, "b"), newTestNode(t, "c"), newTestNode(t, "d")
	id := createRealm(t, a, "members")
	invited(t, a, id, crdt.RoleWriter, b, c, d)
	converge(t, id, a, b, c, d)

	if err := a.SetRole(ctx, id, b.Author(), crdt.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRole(ctx, id, d.Author(), crdt.RoleAdmin); err == nil {
		t.Error("a writer changed a role")
	}
	if err := a.RemoveMember(ctx, id, c.Author()); err != nil {
		t.Fatal(err)
	}
	if err := d.Leave(ctx, id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for role(t, a, id, d) != crdt.RoleNone && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // d's leaving is on its way by gossip
	}
	converge(t, id, a, b)
	for _, n := range []*Node{a, b} {
		for who, want := range map[*Node]crdt.Role{b: crdt.RoleAdmin, c: crdt.RoleNone, d: crdt.RoleNone} {
			if got := role(t, n, id, who); got != want {
				t.Errorf("%s sees %s as %s, want %s", n.cfg.Name, who.cfg.Name, got, want)
			}
		}
	}
	if err := a.RemoveMember(ctx, id, c.Author()); !errors.Is(err, crdt.ErrNotMember) {
		t.Errorf("removing a non-member: %v", err)
	}
}

// TestOfferOfAnotherRealm: a node asked to honour an offer of a realm it
// does not hold refuses, and the invitee hears that no node named could
// admit it; nothing changes on the node asked.
func TestOfferOfAnotherRealm(t *testing.T) {
	ctx := context.Background()
	a, x, b := newTestNode(t, "a"), newTestNode(t, "x"), newTestNode(t, "b")
	mine := createRealm(t, a, "mine")
	other := createRealm(t, x, "other")
	o := offer(t, x, other, crdt.RoleWriter, 1)
	// The offer names x at an address where nothing listens, and a.
	o.Nodes = []invite.Node{
		{Key: x.Author(), Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/1")}},
		{Key: a.Author(), Addrs: a.host.Addrs()},
	}
	if err := o.Sign(x.priv); err != nil {
		t.Fatal(err)
	}
	before := digest(t, a, mine)
	_, err := b.Accept(ctx, o)
	refusedWith(t, err, invite.ErrUnreachable)
	if digest(t, a, mine) != before {
		t.Error("a refusal changed a's realm")
	}
	if _, err := a.replica(other); err == nil {
		t.Error("a holds the other realm")
	}
}

// TestMembersFindEachOther: b and c join through a, so each knows only
// a's addresses; a passes them on, b and c connect to each other, and
// they keep chatting once a is gone.
func TestMembersFindEachOther(t *testing.T) {
	ctx := context.Background()
	a, b, c := newTestNode(t, "a"), newTestNode(t, "b"), newTestNode(t, "c")
	id := createRealm(t, a, "three")
	invited(t, a, id, crdt.RoleWriter, b, c)
	deadline := time.Now().Add(waitFor)
	for b.host.Network().Connectedness(c.ID()) != network.Connected {
		if time.Now().After(deadline) {
			t.Fatalf("b and c did not connect within %s", waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.Close()
	if _, err := b.Write(ctx, id, message("from b, with a gone")); err != nil {
		t.Fatal(err)
	}
	converge(t, id, b, c)
}
