package crdt

import (
	"errors"
	"testing"
)

// sign makes and signs op number seq of x's chain, linked to prev.
func (x *replica) sign(id RealmID, seq uint64, prev Hash, wallMs int64, body Body) *Op {
	x.t.Helper()
	op := &Op{Realm: id, Author: x.pub, Seq: seq, Prev: prev, Clock: MakeTimestamp(wallMs, 0), Body: body}
	if err := op.Sign(x.priv); err != nil {
		x.t.Fatal(err)
	}
	return op
}

// TestWriteAfterClockStepsBack checks that local writes still land when
// the wall clock steps back past MaxClockSkew: they are never held.
func TestWriteAfterClockStepsBack(t *testing.T) {
	a := founder(t, "a")
	a.write(setBody("n1", "1"), t0+10)
	back := int64(t0 - 3*MaxClockSkew)
	for i := range 2 {
		b := NewBatch()
		op, res, err := a.r.Write(b, a.priv, setBody("n1", "later"), back+int64(i))
		if err != nil {
			t.Fatalf("write %d after the clock stepped back: %v", i, err)
		}
		a.st.Commit(b)
		if len(res.Stored) != 1 || res.Held != 0 {
			t.Fatalf("write %d: stored %d, held %d; want stored 1, held 0", i, len(res.Stored), res.Held)
		}
		if op.Clock.WallMs() < t0+10 {
			t.Errorf("write %d stamped %v, before the op it follows", i, op.Clock)
		}
	}
	if seq, _ := a.r.Head(a.pub); seq != 4 {
		t.Errorf("chain head = %d; want 4", seq)
	}
}

// TestStrangerCannotHold checks that ops ahead of a gap from an author who
// was never a member are refused, not held, while a member's are held.
func TestStrangerCannotHold(t *testing.T) {
	a := founder(t, "a")
	genesis, _ := a.r.Op(a.pub, 1)
	b := newReplica(t, "b", a.r.ID())
	if _, err := b.apply(genesis, t0); err != nil {
		t.Fatal(err)
	}
	s := newReplica(t, "s", a.r.ID())
	far := s.sign(a.r.ID(), 5, Hash{1}, t0, setBody("n", "s"))
	if _, err := b.apply(far, t0); !errors.Is(err, ErrNotMember) {
		t.Fatalf("a stranger's op ahead of a gap: got %v, want ErrNotMember", err)
	}
	if b.r.npend != 0 {
		t.Fatalf("held %d ops of a stranger", b.r.npend)
	}
	// Before the genesis op nobody can tell strangers apart; once it is
	// here, what they had put in the queue goes.
	c := newReplica(t, "c", a.r.ID())
	if res, err := c.apply(far, t0); err != nil || res.Held != 1 {
		t.Fatalf("before the genesis op: %v, %v; want held", res, err)
	}
	if _, err := c.apply(genesis, t0); err != nil {
		t.Fatal(err)
	}
	if c.r.npend != 0 {
		t.Errorf("a stranger's op still held after the genesis op came")
	}

	a.write(setBody("n", "1"), t0+1)
	mine := a.write(setBody("n", "2"), t0+2)
	res, err := b.apply(mine, t0+2)
	if err != nil || res.Held != 1 {
		t.Fatalf("a member's op ahead of a gap: held %v, %v; want held 1", res, err)
	}
}

// TestEquivocationAgainstHeldOp checks that an op conflicting with one
// held back for its clock is reported, not silently swapped in.
func TestEquivocationAgainstHeldOp(t *testing.T) {
	a := founder(t, "a")
	genesis, _ := a.r.Op(a.pub, 1)
	b := newReplica(t, "b", a.r.ID())
	if _, err := b.apply(genesis, t0); err != nil {
		t.Fatal(err)
	}
	future := a.sign(a.r.ID(), 2, genesis.Hash(), t0+2*MaxClockSkew, setBody("n", "future"))
	now := a.sign(a.r.ID(), 2, genesis.Hash(), t0+1, setBody("n", "now"))
	if res, err := b.apply(future, t0); err != nil || res.Held != 1 {
		t.Fatalf("future op: %v, %v; want held", res, err)
	}
	before := b.r.Digest()
	_, err := b.apply(now, t0+1)
	var eq *Equivocation
	if !errors.As(err, &eq) {
		t.Fatalf("second op at a held position: got %v, want *Equivocation", err)
	}
	if b.r.Digest() != before || b.r.npend != 1 {
		t.Errorf("the refused op changed the replica")
	}
}

// TestHeldRangeOpsKeepTheirSource checks that ops of a range held back
// ahead of a gap are judged as range ops when they are released: a
// reader's data ops are then stored without effect, whatever the order.
func TestHeldRangeOpsKeepTheirSource(t *testing.T) {
	a := founder(t, "a")
	rd := newReplica(t, "r", a.r.ID())
	a.write(&Grant{Member: rd.pub, Role: RoleReader, FromSeq: 1, Name: "r"}, t0+1)
	one := rd.sign(a.r.ID(), 1, Hash{}, t0+2, setBody("n", "1"))
	two := rd.sign(a.r.ID(), 2, one.Hash(), t0+3, setBody("n", "2"))

	heads := map[string]uint64{}
	for name, ranges := range map[string][][]*Op{
		"in order": {{one, two}},
		"reversed": {{two}, {one}},
	} {
		x := newReplica(t, "x", a.r.ID())
		for s := uint64(1); s <= 2; s++ {
			op, _ := a.r.Op(a.pub, s)
			if _, err := x.apply(op, t0+5); err != nil {
				t.Fatal(err)
			}
		}
		for _, rg := range ranges {
			b := NewBatch()
			if _, err := x.r.ApplyRange(b, rg, t0+5); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			x.st.Commit(b)
		}
		heads[name], _ = x.r.Head(rd.pub)
	}
	if heads["in order"] != 2 || heads["reversed"] != 2 {
		t.Errorf("reader's chain head: %v; want 2 either way", heads)
	}
}
