package crdt

import (
	"errors"
	"fmt"
	"testing"
)

// writeGroup writes bodies as one group: unsigned, then SignHead.
func (x *replica) writeGroup(wallMs int64, bodies ...Body) []*Op {
	x.t.Helper()
	b := NewBatch()
	var ops []*Op
	for _, body := range bodies {
		op, _, err := x.r.WriteUnsigned(b, x.priv, body, wallMs)
		if err != nil {
			x.t.Fatalf("write %s: %v", body.Kind(), err)
		}
		ops = append(ops, op)
	}
	x.r.SignHead(b, x.priv)
	x.st.Commit(b)
	return ops
}

// TestGroupWrite writes a group with one signature and applies it
// elsewhere as a whole; any part of it that does not end with the signed
// op is refused and changes nothing.
func TestGroupWrite(t *testing.T) {
	a := founder(t, "a")
	ops := a.writeGroup(t0+1, setBody("n1", "1"), setBody("n2", "2"), setBody("n1", "3"))
	for i, op := range ops {
		if want := i == len(ops)-1; op.Signed() != want {
			t.Errorf("op %d signed = %v, want %v", i, op.Signed(), want)
		}
	}
	if err := ops[2].VerifySignature(); err != nil {
		t.Fatalf("the group's signature: %v", err)
	}
	stored, err := a.r.Op(a.pub, ops[2].Seq)
	if err != nil || !stored.Signed() || stored.Hash() != ops[2].Hash() {
		t.Fatalf("stored head = %v, %v; want it signed, same hash", stored, err)
	}
	if ops[1].Prev != ops[0].Hash() || ops[2].Prev != ops[1].Hash() {
		t.Fatal("group ops do not link")
	}

	b := newReplica(t, "b", a.r.ID())
	g, _ := a.r.Op(a.pub, 1)
	if _, err := b.apply(g, t0+2); err != nil {
		t.Fatal(err)
	}
	before, keys := b.r.Digest(), b.st.Len()
	refuse := []struct {
		name string
		fn   func(*Batch) error
	}{
		{"an unsigned op alone", func(bt *Batch) error { _, err := b.r.Apply(bt, ops[0], t0+2); return err }},
		{"a group cut before its signature", func(bt *Batch) error { _, err := b.r.ApplyGroup(bt, ops[:2], t0+2); return err }},
		{"a range cut before its signature", func(bt *Batch) error { _, err := b.r.ApplyRange(bt, ops[:2], t0+2); return err }},
	}
	for _, c := range refuse {
		bt := NewBatch()
		if err := c.fn(bt); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: err = %v, want ErrBadSignature", c.name, err)
		}
		if bt.Len() != 0 || b.r.Digest() != before || b.st.Len() != keys {
			t.Errorf("%s changed the replica", c.name)
		}
	}
	bt := NewBatch()
	res, err := b.r.ApplyGroup(bt, ops, t0+2)
	b.st.Commit(bt)
	if err != nil || len(res.Stored) != 3 {
		t.Fatalf("apply group = %v, %v; want 3 stored", res, err)
	}
	if b.r.Digest() != a.r.Digest() {
		t.Error("replicas differ after the group")
	}
	if reopened := mustOpen(t, b.st, b.r.ID()); reopened.Digest() != a.r.Digest() {
		t.Error("reopened replica differs")
	}
}

// TestGroupLimits checks that a long run of unsigned writes is signed at
// least every MaxGroupOps ops.
func TestGroupLimits(t *testing.T) {
	a := founder(t, "a")
	bodies := make([]Body, 3*MaxGroupOps)
	for i := range bodies {
		bodies[i] = setBody("n", "v")
	}
	ops := a.writeGroup(t0+1, bodies...)
	run := 0
	for _, op := range ops {
		run++
		if op.Signed() {
			run = 0
		}
		if run >= MaxGroupOps {
			t.Fatalf("op %s: %d unsigned ops in a row", op, run)
		}
	}
	if !ops[len(ops)-1].Signed() {
		t.Fatal("the last op is unsigned")
	}
	if _, err := a.r.ApplyGroup(NewBatch(), make([]*Op, MaxGroupOps+1), t0); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized group: err = %v, want ErrTooLarge", err)
	}
}

// TestGroupEquivocation forks a chain inside unsigned ops: the fork is
// caught, and the evidence, vouched for by the signed ops after each
// half, freezes the author on every replica that gets it.
func TestGroupEquivocation(t *testing.T) {
	a, m, c := writerAndWitness(t)
	// m writes two different groups of two at seqs 1 and 2.
	fork := func(v string) []*Op {
		var ops []*Op
		prev := Hash{}
		for seq := uint64(1); seq <= 2; seq++ {
			op := &Op{Realm: a.r.ID(), Author: m.pub, Seq: seq, Prev: prev,
				Clock: MakeTimestamp(t0+3, uint16(seq)), Body: setBody("n", v)}
			if err := op.encode(); err != nil {
				t.Fatal(err)
			}
			ops, prev = append(ops, op), op.Hash()
		}
		ops[1].sign(m.priv)
		return ops
	}
	x, y := fork("x"), fork("y")
	for _, p := range []struct {
		r   *replica
		ops []*Op
	}{{a, x}, {c, y}} {
		bt := NewBatch()
		if _, err := p.r.r.ApplyGroup(bt, p.ops, t0+4); err != nil {
			t.Fatal(err)
		}
		p.r.st.Commit(bt)
	}
	bt := NewBatch()
	_, err := a.r.ApplyGroup(bt, y, t0+5)
	var eq *Equivocation
	if !errors.As(err, &eq) {
		t.Fatalf("apply other half = %v, want *Equivocation", err)
	}
	if len(eq.HeldRest) != 1 || len(eq.GotRest) != 1 {
		t.Fatalf("evidence vouchers: held %d, got %d; want 1 each", len(eq.HeldRest), len(eq.GotRest))
	}
	decoded, err := decodeEvidence(eq.encode())
	if err != nil {
		t.Fatalf("evidence round trip: %v", err)
	}
	for _, r := range []*replica{a, c} {
		bt := NewBatch()
		if _, err := r.r.ApplyEvidence(bt, decoded); err != nil {
			t.Fatal(err)
		}
		r.st.Commit(bt)
	}
	if a.r.Digest() != c.r.Digest() {
		t.Error("replicas differ after both saw the evidence")
	}
	if _, err := a.r.Object(ObjectKey{"notes", "n"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("forked write still visible: %v", err)
	}

	// Evidence whose unsigned op nothing vouches for proves nothing.
	weak := &Equivocation{Held: eq.Held, Got: eq.Got, GotRest: eq.GotRest}
	d := newReplica(t, "d", a.r.ID())
	if _, err := d.r.ApplyEvidence(NewBatch(), weak); !errors.Is(err, ErrBadSignature) {
		t.Errorf("unvouched evidence: err = %v, want ErrBadSignature", err)
	}
}

// chainOf builds n ops of x's chain after (seq, prev), with only the ops
// sign says signed; garbage ones carry a signature that does not hold.
func chainOf(t *testing.T, x *replica, id RealmID, seq uint64, prev Hash, n int, sign func(i int) bool, garbage func(i int) bool) []*Op {
	t.Helper()
	var ops []*Op
	for i := range n {
		op := &Op{Realm: id, Author: x.pub, Seq: seq + uint64(i) + 1, Prev: prev,
			Clock: MakeTimestamp(t0+10, uint16(i)), Body: setBody(fmt.Sprint("n", i%7), fmt.Sprint(i))}
		if err := op.encode(); err != nil {
			t.Fatal(err)
		}
		switch {
		case sign(i):
			op.sign(x.priv)
		case garbage(i):
			for k := range op.Sig {
				op.Sig[k] = byte(k + 1)
			}
			copy(op.raw[len(op.raw)-SignatureSize:], op.Sig[:])
		}
		ops, prev = append(ops, op), op.Hash()
	}
	return ops
}

// TestVouchReach: a chain must carry a signature that holds at least once
// every MaxGroupOps ops; signatures that do not hold never count.
func TestVouchReach(t *testing.T) {
	none := func(int) bool { return false }
	a := founder(t, "a")
	g, _ := a.r.Op(a.pub, 1)
	n := MaxGroupOps + 40
	last := func(i int) bool { return i == n-1 }
	cases := []struct {
		name          string
		sign, garbage func(int) bool
		ok            bool
	}{
		{"only the last signed", last, none, false},
		{"one in the middle too", func(i int) bool { return i == n-1 || i == 100 }, none, true},
		{"garbage in the middle", last, func(i int) bool { return i == 100 }, false},
	}
	for _, c := range cases {
		b := newReplica(t, "b", a.r.ID())
		if _, err := b.apply(g, t0+1); err != nil {
			t.Fatal(err)
		}
		head, hash := a.r.Head(a.pub)
		ops := chainOf(t, a, a.r.ID(), head, hash, n, c.sign, c.garbage)
		before := b.r.Digest()
		bt := NewBatch()
		_, err := b.r.ApplyRange(bt, ops, t0+20)
		b.st.Commit(bt)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case !c.ok && !errors.Is(err, ErrBadSignature):
			t.Errorf("%s: err = %v, want ErrBadSignature", c.name, err)
		case !c.ok && b.r.Digest() != before:
			t.Errorf("%s: refused range changed the replica", c.name)
		}
	}
}

// TestGarbageInnerSignature: an op inside a group may carry a signature
// that does not hold; the group is still vouched for by its last op, and
// an equivocation at that op yields evidence that reaches past it.
func TestGarbageInnerSignature(t *testing.T) {
	a, m, c := writerAndWitness(t)
	group := chainOf(t, m, a.r.ID(), 0, Hash{}, 3, func(i int) bool { return i == 2 }, func(i int) bool { return i == 0 })
	bt := NewBatch()
	if _, err := c.r.ApplyGroup(bt, group, t0+20); err != nil {
		t.Fatal(err)
	}
	c.st.Commit(bt)
	other := &Op{Realm: a.r.ID(), Author: m.pub, Seq: 1, Clock: MakeTimestamp(t0+11, 0), Body: setBody("x", "other")}
	if err := other.Sign(m.priv); err != nil {
		t.Fatal(err)
	}
	_, err := c.apply(other, t0+20)
	var eq *Equivocation
	if !errors.As(err, &eq) {
		t.Fatalf("conflicting op: err = %v, want *Equivocation", err)
	}
	bt = NewBatch()
	if _, err := c.r.ApplyEvidence(bt, eq); err != nil {
		t.Fatalf("evidence past a bad inner signature: %v", err)
	}
	c.st.Commit(bt)
	if len(eq.HeldRest) != 2 {
		t.Errorf("held op vouched for by %d ops, want 2", len(eq.HeldRest))
	}
}

// writerAndWitness makes a realm of founder a with writer m, and a third
// replica c; m and c hold a's grant.
func writerAndWitness(t *testing.T) (a, m, c *replica) {
	t.Helper()
	a = founder(t, "a")
	_, mk := testKey("m")
	a.write(&Grant{Member: mk, Role: RoleWriter, FromSeq: 1, Name: "m"}, t0+1)
	m = newReplica(t, "m", a.r.ID())
	c = newReplica(t, "c", a.r.ID())
	for s := uint64(1); s <= 2; s++ {
		op, _ := a.r.Op(a.pub, s)
		for _, x := range []*replica{m, c} {
			if _, err := x.apply(op, t0+2); err != nil {
				t.Fatal(err)
			}
		}
	}
	return a, m, c
}
