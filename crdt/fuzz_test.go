package crdt

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// FuzzDecodeOp feeds arbitrary bytes to the op decoder. It must never
// panic, and what it accepts must be canonical: encoding the decoded op
// again gives the same bytes.
func FuzzDecodeOp(f *testing.F) {
	for _, body := range sampleBodies() {
		f.Add(signedOp(f, body).Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		op, err := DecodeOp(data)
		if err != nil {
			return
		}
		again := op.appendUnsigned(nil)
		again = append(again, op.Sig[:]...)
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted a non-canonical encoding:\n in %x\nout %x", data, again)
		}
		_ = op.VerifySignature() // must not panic
	})
}

// FuzzDecodeObject feeds arbitrary bytes to the stored-object decoder,
// which reads what a damaged disk might hold.
func FuzzDecodeObject(f *testing.F) {
	o := &Object{Key: ObjectKey{"c", "1"}}
	for _, body := range sampleBodies() {
		if _, ok := objectOf(body); ok {
			o.fold(signedOp(f, body))
			f.Add(o.encode())
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, err := decodeObject(data)
		if err != nil {
			return
		}
		if got := obj.encode(); !bytes.Equal(got, data) {
			t.Fatalf("object decode/encode not symmetric")
		}
	})
}

// FuzzApply feeds ops to a realm: the fuzzer's bytes are decoded, moved
// into the realm and signed again by the founder or by a stranger, so that
// the permission, chain and hold paths see them rather than the signature
// check. The realm must not panic; an error must leave the batch empty and
// the state as it was; what is accepted must survive a reopen.
func FuzzApply(f *testing.F) {
	for _, body := range sampleBodies() {
		f.Add(signedOp(f, body).Bytes(), false)
		f.Add(signedOp(f, body).Bytes(), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, stranger bool) {
		op, err := DecodeOp(data)
		if err != nil {
			return
		}
		st := NewMemStorage()
		b := NewBatch()
		priv, _ := testKey("a")
		r, genesis, err := Create(st, b, priv, "fuzz", "a", [16]byte{}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		st.Commit(b)
		if stranger {
			priv, _ = testKey("s")
		}
		copy(op.Author[:], priv.Public().(ed25519.PublicKey))
		if op.Kind() != KindGenesis {
			op.Realm = r.ID()
			if op.Seq == 2 {
				op.Prev = genesis.Hash()
			}
		}
		if op.Sign(priv) != nil {
			return
		}
		before := r.Digest()
		b = NewBatch()
		if _, err := r.Apply(b, op, 2000); err != nil {
			if b.Len() != 0 || r.Digest() != before {
				t.Fatalf("refused op %s changed state: %v", op, err)
			}
			return
		}
		st.Commit(b)
		if again := mustOpen(t, st, r.ID()); again.Digest() != r.Digest() {
			t.Fatalf("op %s: reopening gives another digest", op)
		}
	})
}

// FuzzDecodeEvidence feeds arbitrary bytes to the stored-evidence decoder.
// What it accepts is two ops at one position, stored back as it was.
func FuzzDecodeEvidence(f *testing.F) {
	priv, pub := testKey("a")
	var pair []*Op
	for _, v := range []string{"x", "y"} {
		op := &Op{Realm: Hash{7}, Author: pub, Seq: 2, Prev: Hash{6}, Clock: MakeTimestamp(1000, 0),
			Body: setBody("n", v)}
		if err := op.Sign(priv); err != nil {
			f.Fatal(err)
		}
		pair = append(pair, op)
	}
	f.Add((&Equivocation{Held: pair[0], Got: pair[1]}).encode())
	f.Add((&Equivocation{Held: pair[0], Got: pair[0]}).encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEvidence(data)
		if err != nil {
			return
		}
		if e.Held.Seq != e.Got.Seq || e.Held.Hash() == e.Got.Hash() {
			t.Fatal("accepted evidence that is not two ops at one position")
		}
		if !bytes.Equal(e.encode(), data) {
			t.Fatal("evidence decode/encode not symmetric")
		}
	})
}
