package crdt

import "testing"

// message is a new chat message of ordinary length, its id left to the engine.
func message() *Set {
	return &Set{Collection: MessagesCollection,
		Fields: []Field{{"text", []byte(`"hello, this is a chat message of ordinary length"`)}}}
}

// BenchmarkWrite measures creating, signing and applying one local op,
// with its batch committed to memory. Target: ≤ 60 µs.
func BenchmarkWrite(b *testing.B) {
	a := founder(b, "a")
	i := 0
	for b.Loop() {
		batch := NewBatch()
		if _, _, err := a.r.Write(batch, a.priv, message(), t0+int64(i)); err != nil {
			b.Fatal(err)
		}
		a.st.Commit(batch)
		i++
	}
}

// BenchmarkApplyRange100k measures verifying and applying 100,000 received
// ops as author-chain ranges of 1,000, the way catch-up delivers them.
// Target: ≤ 1 s per 100,000 ops on one core.
func BenchmarkApplyRange100k(b *testing.B) {
	const n = 100_000
	a := founder(b, "a")
	batch := NewBatch()
	for i := range n - 1 {
		if _, _, err := a.r.Write(batch, a.priv, message(), t0+int64(i)); err != nil {
			b.Fatal(err)
		}
		if batch.Len() > 10000 {
			a.st.Commit(batch)
			batch = NewBatch()
		}
	}
	a.st.Commit(batch)
	ops := make([]*Op, n)
	for s := range ops {
		op, err := a.r.Op(a.pub, uint64(s+1))
		if err != nil {
			b.Fatal(err)
		}
		ops[s] = op
	}
	b.ResetTimer()
	for b.Loop() {
		st := NewMemStorage()
		r := mustOpen(b, st, a.r.ID())
		batch := NewBatch()
		for i := 0; i < n; i += 1000 {
			if _, err := r.ApplyRange(batch, ops[i:min(i+1000, n)], t0+n); err != nil {
				b.Fatal(err)
			}
			st.Commit(batch)
			batch.Reset()
		}
		if r.Digest() != a.r.Digest() {
			b.Fatal("digest differs after catch-up")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/op-applied")
}
