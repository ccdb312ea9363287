package daemon

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/realmsync/realmsync/crdt"
)

func TestX25519FromEd25519(t *testing.T) {
	for range 20 {
		pub, priv, _ := ed25519.GenerateKey(nil)
		x, err := x25519Private(priv)
		if err != nil {
			t.Fatal(err)
		}
		got, err := x25519Public(crdt.PublicKey(pub))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), x.PublicKey().Bytes()) {
			t.Fatal("the converted public key does not match the converted private key")
		}
	}
}

func TestKeyBox(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	key := crdt.EpochKey{1, 2, 3}
	realm := crdt.RealmID{9}
	box, err := sealKeyTo(crdt.PublicKey(pub), &key, realm, 3)
	if err != nil {
		t.Fatal(err)
	}
	got, err := openKeyBox(priv, box, realm, 3)
	if err != nil || *got != key {
		t.Fatalf("open: %v", err)
	}
	if _, err := openKeyBox(other, box, realm, 3); err == nil {
		t.Error("another node opened the box")
	}
	if _, err := openKeyBox(priv, box, realm, 4); err == nil {
		t.Error("the box opened for another epoch")
	}
	box[40] ^= 1
	if _, err := openKeyBox(priv, box, realm, 3); err == nil {
		t.Error("a changed box opened")
	}
}

// opsOf returns the encoded ops of author's chain in the realm on n, from
// seq from on.
func opsOf(t *testing.T, n *Node, id crdt.RealmID, author crdt.PublicKey, from uint64) [][]byte {
	t.Helper()
	var out [][]byte
	n.View(id, func(r *crdt.Realm) error {
		return r.Ops(author, from, func(op *crdt.Op) bool {
			out = append(out, op.Bytes())
			return true
		})
	})
	return out
}

// TestRemovedCannotRead: after c is removed, the realm moves to a new key
// epoch. What a writes then reaches b, and stays closed to c, although c
// receives the ops and still holds the old key. Nothing a writes shows
// its text on the wire.
func TestRemovedCannotRead(t *testing.T) {
	ctx := context.Background()
	a, b, c := newTestNode(t, "a"), newTestNode(t, "b"), newTestNode(t, "c")
	id := createRealm(t, a, "sealed")
	invited(t, a, id, crdt.RoleWriter, b, c)
	if _, err := a.Write(ctx, id, message("before the removal")); err != nil {
		t.Fatal(err)
	}
	converge(t, id, a, b, c)
	var head uint64
	a.View(id, func(r *crdt.Realm) error { head, _ = r.Head(a.Author()); return nil })

	if err := a.RemoveMember(ctx, id, c.Author()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(ctx, id, message("after the removal")); err != nil {
		t.Fatal(err)
	}
	converge(t, id, a, b)
	shows := func(n *Node, text string) bool {
		err := n.View(id, func(r *crdt.Realm) error {
			_, err := r.Object(crdt.ObjectKey{Collection: crdt.MessagesCollection, ID: text})
			return err
		})
		return err == nil
	}
	if !shows(b, "after the removal") || !shows(c, "before the removal") {
		t.Fatal("members do not show what they may read")
	}

	// c receives everything a wrote since, as if still connected.
	rp, err := c.replica(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range opsOf(t, a, id, a.Author(), head+1) {
		if bytes.Contains(raw, []byte("after the removal")) {
			t.Fatal("an op shows its text")
		}
		op, err := crdt.DecodeOp(raw)
		if err != nil {
			t.Fatal(err)
		}
		rp.apply([]*crdt.Op{op}, false)
	}
	rp.tick()
	if shows(c, "after the removal") {
		t.Fatal("the removed member reads what was written after its removal")
	}
	if len(rp.ring.EpochKeys(1)) > 0 {
		t.Fatal("the removed member holds the new epoch's key")
	}
}

// TestConcurrentRotations: two admins cut apart each remove a member, so
// each starts key epoch 1 with a key of its own, and both halves write
// under it. Once they meet again, every member holds both keys and reads
// everything: the replicas converge with nothing lost.
func TestConcurrentRotations(t *testing.T) {
	ctx := context.Background()
	nt := newNet(t)
	a, c := nt.add("a", time.Second), nt.add("c", time.Second)
	b, d := nt.add("b", time.Second), nt.add("d", time.Second)
	e, f := nt.add("e", time.Second), nt.add("f", time.Second)
	id := createRealm(t, a, "rotations")
	admit(t, a, c, id, crdt.RoleAdmin)
	for _, n := range []*Node{b, d, e, f} {
		admit(t, a, n, id, crdt.RoleWriter)
	}
	all := []*Node{a, b, c, d, e, f}
	for _, n := range all[1:] {
		connect(t, a, n)
	}
	connect(t, c, d)
	converge(t, id, all...)

	left, right := []*Node{a, b, e}, []*Node{c, d, f}
	nt.split(left, right)
	if err := a.RemoveMember(ctx, id, e.Author()); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveMember(ctx, id, f.Author()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{a, b, c, d} {
		if _, err := n.Write(ctx, id, message("in epoch 1 from "+n.cfg.Name)); err != nil {
			t.Fatal(err)
		}
	}
	nt.heal(left, right)
	connect(t, a, c)
	converge(t, id, a, b, c, d)
	for _, n := range []*Node{a, b, c, d} {
		rp, _ := n.replica(id)
		if got := len(rp.ring.EpochKeys(1)); got != 2 {
			t.Errorf("%s holds %d keys of epoch 1, want 2", n.cfg.Name, got)
		}
		n.View(id, func(r *crdt.Realm) error {
			for _, w := range []string{"a", "b", "c", "d"} {
				key := crdt.ObjectKey{Collection: crdt.MessagesCollection, ID: "in epoch 1 from " + w}
				if _, err := r.Object(key); err != nil {
					t.Errorf("%s does not show %s's message: %v", n.cfg.Name, w, err)
				}
			}
			return nil
		})
	}
}

// TestLeaveRotates: when a member leaves by itself, an admin node starts
// a new key epoch, whose key the remaining members get and the one who
// left does not.
func TestLeaveRotates(t *testing.T) {
	ctx := context.Background()
	a, b, c := newTestNode(t, "a"), newTestNode(t, "b"), newTestNode(t, "c")
	id := createRealm(t, a, "leaving")
	invited(t, a, id, crdt.RoleWriter, b, c)
	converge(t, id, a, b, c)
	if err := c.Leave(ctx, id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for {
		var epoch uint32
		a.View(id, func(r *crdt.Realm) error { epoch, _ = r.KeyEpoch(); return nil })
		if epoch == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new key epoch after a member left")
		}
		time.Sleep(20 * time.Millisecond)
	}
	converge(t, id, a, b)
	for n, want := range map[*Node]bool{a: true, b: true, c: false} {
		rp, _ := n.replica(id)
		if got := len(rp.ring.EpochKeys(1)) > 0; got != want {
			t.Errorf("%s holds the new key: %v, want %v", n.cfg.Name, got, want)
		}
	}
}

// TestKeyFetchedFromMember: a admits c while b, cut off from a, starts a
// new key epoch without knowing of c and writes in it. c has no box in
// b's Epoch op, and a handed it only the keys it had then; once the cut
// heals, c asks a fellow member for the missing key and reads what b
// wrote, and from then on writes in the new epoch itself. A node that is
// not a member asks in vain.
func TestKeyFetchedFromMember(t *testing.T) {
	ctx := context.Background()
	nt := newNet(t)
	a, b, c := nt.add("a", time.Second), nt.add("b", time.Second), nt.add("c", time.Second)
	id := createRealm(t, a, "late keys")
	admit(t, a, b, id, crdt.RoleAdmin)
	connect(t, a, b)
	converge(t, id, a, b)

	nt.split([]*Node{a, c}, []*Node{b})
	if err := b.rotateKey(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(ctx, id, message("from b in epoch 1")); err != nil {
		t.Fatal(err)
	}
	admit(t, a, c, id, crdt.RoleWriter)
	connect(t, a, c)
	converge(t, id, a, c)
	nt.heal([]*Node{a, c}, []*Node{b})
	connect(t, a, b)
	connect(t, b, c)
	converge(t, id, a, b, c)

	rp, err := c.replica(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(rp.ring.EpochKeys(1)) != 1 {
		t.Fatal("c does not hold the key of epoch 1")
	}
	for _, n := range []*Node{a, b, c} {
		n.View(id, func(r *crdt.Realm) error {
			if _, err := r.Object(crdt.ObjectKey{Collection: crdt.MessagesCollection, ID: "from b in epoch 1"}); err != nil {
				t.Errorf("%s does not show b's message: %v", n.cfg.Name, err)
			}
			return nil
		})
	}
	op, err := c.Write(ctx, id, message("from c"))
	if err != nil {
		t.Fatal(err)
	}
	if op.Epoch != 1 {
		t.Errorf("c writes in epoch %d, want 1", op.Epoch)
	}

	// c holds no box in epoch 1's Epoch op: asked by a, it vouches for
	// epoch 0's key only.
	keys, err := a.askKeys(c.ID(), &keyAsk{realm: id, epochs: []uint32{0, 1}})
	if err != nil || len(keys) != 1 || keys[0].Epoch != 0 {
		t.Errorf("c answers %v (%v), want epoch 0's key alone", keys, err)
	}
	// A made-up key that opens nothing held is not kept.
	rp.mu.Lock()
	kept := keysToKeep(rp.r, rp.ring, []crdt.RealmKey{{Epoch: 1, Key: crdt.EpochKey{1}}}, []uint32{1})
	rp.mu.Unlock()
	if len(kept) != 0 {
		t.Errorf("a key that opens nothing would be kept")
	}

	// A stranger who knows the realm id gets no keys.
	d := nt.add("d", time.Second)
	connect(t, d, a)
	if keys, err := d.askKeys(a.ID(), &keyAsk{realm: id, epochs: []uint32{0, 1}}); err == nil {
		t.Fatalf("a stranger was answered with %d keys", len(keys))
	}
}
