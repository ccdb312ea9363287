package crdt

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
)

// replica is one author with its own store, for tests outside scenarios.
type replica struct {
	t    testing.TB
	priv ed25519.PrivateKey
	pub  PublicKey
	st   *MemStorage
	r    *Realm
}

const t0 = 1_700_000_000_000

func newReplica(t testing.TB, name string, id RealmID) *replica {
	t.Helper()
	priv, pub := testKey(name)
	x := &replica{t: t, priv: priv, pub: pub, st: NewMemStorage()}
	if !id.IsZero() {
		x.r = mustOpen(t, x.st, id)
	}
	return x
}

// founder creates a realm and returns its replica.
func founder(t testing.TB, name string) *replica {
	t.Helper()
	x := newReplica(t, name, Hash{})
	b := NewBatch()
	r, _, err := Create(x.st, b, x.priv, "test realm", name, [16]byte{1}, t0)
	if err != nil {
		t.Fatal(err)
	}
	x.st.Commit(b)
	x.r = r
	return x
}

func (x *replica) write(body Body, wallMs int64) *Op {
	x.t.Helper()
	b := NewBatch()
	op, _, err := x.r.Write(b, x.priv, body, wallMs)
	if err != nil {
		x.t.Fatalf("write %s: %v", body.Kind(), err)
	}
	x.st.Commit(b)
	return op
}

func (x *replica) apply(op *Op, wallMs int64) (*Result, error) {
	b := NewBatch()
	res, err := x.r.Apply(b, op, wallMs)
	x.st.Commit(b)
	return res, err
}

func setBody(id, v string) *Set {
	return &Set{Collection: "notes", ID: id, Fields: []Field{{"v", []byte(v)}}}
}

// TestApplyRefuses checks that each kind of bad op gets its own error and
// leaves state, storage and batch unchanged.
func TestApplyRefuses(t *testing.T) {
	a := founder(t, "a")
	_, readerKey := testKey("r")
	a.write(&Grant{Member: readerKey, Role: RoleReader, FromSeq: 1, Name: "r"}, t0+1)
	first := a.write(setBody("n1", "1"), t0+2)
	second := a.write(setBody("n1", "2"), t0+3)

	other := founder(t, "z") // a different realm
	foreign := other.write(setBody("n1", "x"), t0+4)

	rd := newReplica(t, "r", a.r.ID())
	readerOp := &Op{Realm: a.r.ID(), Author: readerKey, Seq: 1, Clock: MakeTimestamp(t0+5, 0),
		Body: setBody("n1", "reader")}
	if err := readerOp.Sign(rd.priv); err != nil {
		t.Fatal(err)
	}
	stranger := newReplica(t, "s", a.r.ID())
	strangerOp := &Op{Realm: a.r.ID(), Author: stranger.pub, Seq: 1,
		Clock: MakeTimestamp(t0+5, 0), Body: setBody("n1", "s")}
	if err := strangerOp.Sign(stranger.priv); err != nil {
		t.Fatal(err)
	}

	// b holds a's ops up to second; then each bad op is tried on it.
	b := newReplica(t, "b", a.r.ID())
	for s := uint64(1); s <= 4; s++ {
		op, err := a.r.Op(a.pub, s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.apply(op, t0+10); err != nil {
			t.Fatalf("apply %s: %v", op, err)
		}
	}
	_ = first

	resign := func(mut func(op *Op)) *Op {
		op := &Op{Realm: second.Realm, Author: second.Author, Seq: second.Seq,
			Prev: second.Prev, Clock: second.Clock, Body: second.Body}
		mut(op)
		if err := op.Sign(a.priv); err != nil {
			t.Fatal(err)
		}
		return op
	}
	badSig := func() *Op {
		raw := bytes.Clone(resign(func(op *Op) { op.Seq = 5; op.Prev = second.Hash(); op.Clock++ }).Bytes())
		raw[len(raw)-1] ^= 1
		op, err := DecodeOp(raw)
		if err != nil {
			t.Fatal(err)
		}
		return op
	}()

	tests := []struct {
		name string
		op   *Op
		want error
	}{
		{"bad signature", badSig, ErrBadSignature},
		{"wrong realm", foreign, ErrWrongRealm},
		{"broken chain link", resign(func(op *Op) { op.Seq = 5; op.Prev = Hash{1}; op.Clock += 10 }), ErrBrokenChain},
		{"clock goes back", resign(func(op *Op) { op.Seq = 5; op.Prev = second.Hash(); op.Clock = 1 }), ErrClock},
		{"equivocation", resign(func(op *Op) { op.Body = setBody("n1", "fork") }), ErrEquivocation},
		{"reader writes", readerOp, ErrNotPermitted},
		{"stranger writes", strangerOp, ErrNotMember},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, keys := b.r.Digest(), b.st.Len()
			batch := NewBatch()
			_, err := b.r.Apply(batch, tt.op, t0+10)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Apply = %v, want %v", err, tt.want)
			}
			if batch.Len() != 0 || b.r.Digest() != before || b.st.Len() != keys {
				t.Errorf("refused op changed state: batch %d keys", batch.Len())
			}
		})
	}
}

// TestEquivocationEvidence shows that two replicas holding different
// halves of a fork agree once both have the evidence.
func TestEquivocationEvidence(t *testing.T) {
	a, m, c := writerAndWitness(t)
	// m signs two different first ops and shows each to one replica.
	fork := func(v string) *Op {
		op := &Op{Realm: a.r.ID(), Author: m.pub, Seq: 1, Clock: MakeTimestamp(t0+3, 0), Body: setBody("n", v)}
		if err := op.Sign(m.priv); err != nil {
			t.Fatal(err)
		}
		return op
	}
	x, y := fork("x"), fork("y")
	if _, err := a.apply(x, t0+4); err != nil {
		t.Fatal(err)
	}
	if _, err := c.apply(y, t0+4); err != nil {
		t.Fatal(err)
	}
	if a.r.Digest() == c.r.Digest() {
		t.Fatal("forked replicas agree before evidence")
	}
	_, err := a.apply(y, t0+5)
	var eq *Equivocation
	if !errors.As(err, &eq) {
		t.Fatalf("apply other half = %v, want *Equivocation", err)
	}
	for _, x := range []*replica{a, c} {
		b := NewBatch()
		if _, err := x.r.ApplyEvidence(b, eq); err != nil {
			t.Fatal(err)
		}
		x.st.Commit(b)
	}
	if a.r.Digest() != c.r.Digest() {
		t.Error("replicas differ after both saw the evidence")
	}
	if _, err := a.r.Object(ObjectKey{"notes", "n"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("forked write still visible: %v", err)
	}
	reopened := mustOpen(t, a.st, a.r.ID())
	if reopened.Digest() != a.r.Digest() {
		t.Error("evidence lost on reopen")
	}

	// After a restart the proof can still be passed on: a replica that
	// saw one half of the fork and nothing else agrees once it has it.
	ev := reopened.Evidence()
	if len(ev) != 1 || ev[0].Held.Author != m.pub {
		t.Fatalf("evidence after reopen: %v; want m's fork", ev)
	}
	d := newReplica(t, "d", a.r.ID())
	for s := uint64(1); s <= 2; s++ {
		op, _ := a.r.Op(a.pub, s)
		if _, err := d.apply(op, t0+6); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.apply(x, t0+6); err != nil {
		t.Fatal(err)
	}
	b := NewBatch()
	if _, err := d.r.ApplyEvidence(b, ev[0]); err != nil {
		t.Fatal(err)
	}
	d.st.Commit(b)
	if d.r.Digest() != a.r.Digest() {
		t.Error("a replica given the stored evidence differs")
	}
}

// TestApplyRangeChecksLinks verifies ranges by their links and the last
// signature, and refuses a range whose middle was swapped.
func TestApplyRangeChecksLinks(t *testing.T) {
	a := founder(t, "a")
	for i := range 20 {
		a.write(setBody(fmt.Sprint(i), "v"), t0+int64(i)+1)
	}
	var ops []*Op
	for s := uint64(1); s <= 21; s++ {
		op, _ := a.r.Op(a.pub, s)
		ops = append(ops, op)
	}
	b := newReplica(t, "b", a.r.ID())
	swapped := append([]*Op(nil), ops...)
	other := founder(t, "a") // same author, other realm
	swapped[5] = other.write(setBody("evil", "v"), t0+100)
	batch := NewBatch()
	if _, err := b.r.ApplyRange(batch, swapped, t0+1000); !errors.Is(err, ErrBrokenChain) {
		t.Fatalf("ApplyRange(swapped) = %v, want ErrBrokenChain", err)
	}
	if batch.Len() != 0 {
		t.Errorf("refused range staged %d writes", batch.Len())
	}
	batch = NewBatch()
	res, err := b.r.ApplyRange(batch, ops, t0+1000)
	if err != nil {
		t.Fatal(err)
	}
	b.st.Commit(batch)
	if len(res.Stored) != 21 || b.r.Digest() != a.r.Digest() {
		t.Errorf("stored %d ops; digests equal %v", len(res.Stored), b.r.Digest() == a.r.Digest())
	}
}

// TestReopen checks that a reopened realm has the same digest, members and
// heads, without reading history.
func TestReopen(t *testing.T) {
	a := founder(t, "a")
	_, bk := testKey("b")
	a.write(&Grant{Member: bk, Role: RoleWriter, FromSeq: 1, Name: "b"}, t0+1)
	for i := range 50 {
		a.write(&Set{Collection: MessagesCollection, ID: fmt.Sprint(i),
			Fields: []Field{{"text", []byte("hi")}}}, t0+int64(i)+2)
	}
	r := mustOpen(t, a.st, a.r.ID())
	if r.Digest() != a.r.Digest() {
		t.Error("digest changed on reopen")
	}
	if got, want := len(r.Members()), 2; got != want {
		t.Errorf("members = %d, want %d", got, want)
	}
	if seq, _ := r.Head(a.pub); seq != 52 {
		t.Errorf("head = %d, want 52", seq)
	}
	if r.Meta().Name != "test realm" {
		t.Errorf("name = %q", r.Meta().Name)
	}
	page, err := r.Messages("10", 5)
	if err != nil || len(page) != 5 || page[0].Key.ID != "11" {
		t.Errorf("Messages(after 10, 5) = %d messages starting %v, %v", len(page), page, err)
	}
	// The next local write continues the chain.
	b := NewBatch()
	if _, _, err := r.Write(b, a.priv, setBody("x", "1"), t0+100); err != nil {
		t.Fatal(err)
	}
}

// TestArrivals: a message written elsewhere with an earlier stamp sorts
// before messages already here, so paging by realm order from the
// newest one shown never returns it; the arrival log does, after them.
func TestArrivals(t *testing.T) {
	a := founder(t, "a")
	bpriv, bk := testKey("b")
	grant := a.write(&Grant{Member: bk, Role: RoleWriter, FromSeq: 1, Name: "b"}, t0+1)
	b := newReplica(t, "b", a.r.ID())
	b.priv = bpriv
	if _, err := b.apply(a.r.genesis, t0+1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.apply(grant, t0+1); err != nil {
		t.Fatal(err)
	}
	msg := func(text string) *Set {
		return &Set{Collection: MessagesCollection, Fields: []Field{{"text", []byte(text)}}}
	}
	late := b.write(msg("written first, arrives last"), t0+10)
	start := a.r.ArrivalHead()
	a.write(msg("one"), t0+20)
	a.write(msg("two"), t0+30)
	shown, err := a.r.Messages("", 10)
	if err != nil || len(shown) != 2 {
		t.Fatalf("Messages = %d, %v", len(shown), err)
	}
	if _, err := a.apply(late, t0+40); err != nil {
		t.Fatal(err)
	}
	if after, _ := a.r.Messages(shown[1].Key.ID, 10); len(after) != 0 {
		t.Fatalf("Messages after the newest shown = %d; the test needs the late one to sort before", len(after))
	}
	ids, last, err := a.r.Arrivals(start, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{shown[0].Key.ID, shown[1].Key.ID, MessageID(bk, late.Seq)}
	if fmt.Sprint(ids) != fmt.Sprint(want) || last != start+3 || a.r.ArrivalHead() != last {
		t.Fatalf("Arrivals(%d) = %v up to %d (head %d), want %v up to %d", start, ids, last, a.r.ArrivalHead(), want, start+3)
	}
	if ids, last, _ := a.r.Arrivals(last-1, 10); len(ids) != 1 || ids[0] != want[2] || last != start+3 {
		t.Fatalf("Arrivals from the middle = %v up to %d", ids, last)
	}
	if again := mustOpen(t, a.st, a.r.ID()); again.ArrivalHead() != a.r.ArrivalHead() {
		t.Fatalf("reopened: arrival head %d, want %d", again.ArrivalHead(), a.r.ArrivalHead())
	}

	// Messages that one call applies share an entry of the log; reading
	// can start in the middle of it.
	var ops []*Op
	for i := range 3 {
		ops = append(ops, b.write(msg(fmt.Sprint("range ", i)), t0+50+int64(i)))
	}
	start = a.r.ArrivalHead()
	batch := NewBatch()
	if _, err := a.r.ApplyRange(batch, ops, t0+60); err != nil {
		t.Fatal(err)
	}
	a.st.Commit(batch)
	for from := range 3 {
		ids, last, err := a.r.Arrivals(start+uint64(from), 2)
		want := min(2, 3-from)
		if err != nil || len(ids) != want || last != start+uint64(from+want) || ids[0] != MessageID(bk, ops[from].Seq) {
			t.Fatalf("Arrivals(%d, 2) = %v up to %d, %v", start+uint64(from), ids, last, err)
		}
	}
}

func TestObjectsPaging(t *testing.T) {
	a := founder(t, "a")
	for i := range 10 {
		a.write(setBody(fmt.Sprintf("n%02d", i), "v"), t0+int64(i)+1)
	}
	a.write(&Delete{Collection: "notes", ID: "n03"}, t0+20)
	page, err := a.r.Objects("notes", "n01", 3)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range page {
		ids = append(ids, o.Key.ID)
	}
	if got, want := fmt.Sprint(ids), "[n02 n04 n05]"; got != want {
		t.Errorf("Objects(after n01, 3) = %s, want %s", got, want)
	}
}

// TestPendingBounded checks that ops held back ahead of a gap are bounded
// in bytes, and that the held ones apply once the gap is filled.
func TestPendingBounded(t *testing.T) {
	a := founder(t, "a")
	big := bytes.Repeat([]byte("x"), 60<<10)
	var ops []*Op
	for i := range MaxPendingBytes/len(big) + 10 {
		ops = append(ops, a.write(&Set{Collection: "blobs", ID: fmt.Sprint(i),
			Fields: []Field{{"v", big}}}, t0+1+int64(i)))
	}
	b := newReplica(t, "b", a.r.ID())
	genesis, err := a.r.Op(a.pub, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.apply(genesis, t0); err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, op := range ops[1:] {
		res, err := b.apply(op, t0)
		if errors.Is(err, ErrPendingFull) {
			break
		}
		if err != nil {
			t.Fatalf("apply %s: %v", op, err)
		}
		held += res.Held
	}
	if max := MaxPendingBytes / len(ops[1].Bytes()); held == 0 || held > max {
		t.Fatalf("held %d ops of %d bytes before ErrPendingFull; want 1..%d",
			held, len(ops[1].Bytes()), max)
	}
	res, err := b.apply(ops[0], t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(res.Stored); got != held+1 {
		t.Errorf("filling the gap stored %d ops; want the %d held plus the missing one", got, held)
	}
}
