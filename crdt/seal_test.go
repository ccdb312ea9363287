package crdt

import (
	"bytes"
	"errors"
	"testing"
)

// ring is a Keyring in a map, one key an epoch.
type ring map[uint32]*EpochKey

func (k ring) EpochKeys(n uint32) []*EpochKey {
	if key, ok := k[n]; ok {
		return []*EpochKey{key}
	}
	return nil
}

// TestSealed: data written with a keyring travels sealed; a replica
// without the key holds it back, and applies it once the key is there;
// the state and digest then match, also after a reopen.
func TestSealed(t *testing.T) {
	key := &EpochKey{7}
	a := founder(t, "a")
	a.r.SetKeyring(ring{0: key})
	op := a.write(setBody("message-one", `"a secret message"`), t0+1)

	wire, err := DecodeOp(op.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := wire.Body.(*Sealed); !ok {
		t.Fatalf("the op travels as %T", wire.Body)
	}
	if bytes.Contains(op.Bytes(), []byte("secret")) || bytes.Contains(op.Bytes(), []byte("message-one")) {
		t.Fatal("the sealed op shows its content")
	}

	b := newReplica(t, "b", a.r.ID())
	keys := ring{}
	b.r.SetKeyring(keys)
	genesis, err := a.r.Op(a.pub, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.apply(genesis, t0+2); err != nil {
		t.Fatal(err)
	}
	if got := b.r.KeysWanted(); len(got) != 0 {
		t.Fatalf("before any op is held, b wants keys of epochs %v", got)
	}
	res, err := b.apply(wire, t0+2)
	if err != nil || res.Held != 1 {
		t.Fatalf("without the key: held %d, err %v; want it held", res.Held, err)
	}
	if got := b.r.KeysWanted(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("with the op held, b wants keys of epochs %v, want [0]", got)
	}
	if b.r.KeyOpens(0, &EpochKey{8}) || b.r.KeyOpens(1, key) || !b.r.KeyOpens(0, key) {
		t.Fatal("KeyOpens tells keys apart wrongly")
	}
	if _, err := b.r.Object(ObjectKey{"notes", "message-one"}); err == nil {
		t.Fatal("b shows an object it has no key for")
	}

	keys[0] = key
	tick := NewBatch()
	if res := b.r.Tick(tick, t0+3); len(res.Stored) != 1 {
		t.Fatalf("with the key, Tick stored %d ops, want 1", len(res.Stored))
	}
	b.st.Commit(tick)
	if _, err := b.r.Object(ObjectKey{"notes", "message-one"}); err != nil {
		t.Fatalf("with the key, b does not show the object: %v", err)
	}
	if got := b.r.KeysWanted(); len(got) != 0 {
		t.Fatalf("with the key, b still wants keys of epochs %v", got)
	}
	if b.r.Digest() != a.r.Digest() {
		t.Fatal("digests differ once the key is here")
	}
	reopened := mustOpen(t, b.st, a.r.ID())
	reopened.SetKeyring(keys)
	again, err := reopened.Op(a.pub, 2)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := again.Body.(*Set); !ok || s.ID != "message-one" {
		t.Fatalf("the stored op reads back as %T", again.Body)
	}
}

// TestSealedTampered: a sealed body that does not open under the epoch's
// key has no effect: it is held back, as if its key were still to come.
func TestSealedTampered(t *testing.T) {
	key := &EpochKey{7}
	a := founder(t, "a")
	a.r.SetKeyring(ring{0: key})
	genesis, _ := a.r.Op(a.pub, 1)

	op := &Op{Realm: a.r.ID(), Author: a.pub, Seq: 2, Prev: genesis.Hash(),
		Clock: MakeTimestamp(t0+1, 0), Body: setBody("m1", `"x"`)}
	if err := op.seal(key); err != nil {
		t.Fatal(err)
	}
	op.Body.(*Sealed).Box[0] ^= 1
	if err := op.Sign(a.priv); err != nil {
		t.Fatal(err)
	}
	b := newReplica(t, "b", a.r.ID())
	b.r.SetKeyring(ring{0: key})
	if _, err := b.apply(genesis, t0+2); err != nil {
		t.Fatal(err)
	}
	before := b.r.Digest()
	res, err := b.apply(op, t0+2)
	if err != nil || res.Held != 1 || len(res.Stored) != 0 {
		t.Fatalf("held %d, stored %d, err %v; want it held", res.Held, len(res.Stored), err)
	}
	if b.r.Digest() != before {
		t.Fatal("an op that does not open changed the state")
	}
}

// TestWriteNeedsKey: with a keyring that lacks the current epoch's key,
// data cannot be written; membership ops still can.
func TestWriteNeedsKey(t *testing.T) {
	a := founder(t, "a")
	a.r.SetKeyring(ring{})
	b := NewBatch()
	if _, _, err := a.r.Write(b, a.priv, setBody("m1", `"x"`), t0+1); !errors.Is(err, ErrNoKey) {
		t.Fatalf("got %v, want ErrNoKey", err)
	}
	_, bpub := testKey("b")
	a.write(&Grant{Member: bpub, Role: RoleWriter, FromSeq: 1}, t0+2)
}
