package store

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/realmsync/realmsync/crdt"
)

// BenchmarkDurableWrite measures local chat messages written to realms on
// pebble, each acknowledged only once it is synced to disk: from 1 writer,
// from 32 writers to one realm, and from 32 writers spread over 4 realms.
// Each op is signed and written on its own (one batch each), so this is
// group commit alone: the node also signs and writes concurrent writes as
// groups (daemon.BenchmarkNodeWrite measures that path, against the
// target of ≥ 20,000 ops/s with 32 writers). The nosync cases run the
// same without syncing: their gap is the price of durability.
func BenchmarkDurableWrite(b *testing.B) {
	cases := []struct {
		writers, realms int
		nosync          bool
	}{
		{1, 1, false}, {32, 1, false}, {32, 4, false}, {32, 1, true}, {32, 4, true},
	}
	for _, c := range cases {
		name := fmt.Sprintf("writers=%d/realms=%d", c.writers, c.realms)
		if c.nosync {
			name += "/nosync"
		}
		b.Run(name, func(b *testing.B) {
			s := mustOpen(b, b.TempDir(), Options{NoSync: c.nosync})
			authors := make([]*author, c.realms)
			for i := range authors {
				a, err := createRealm(s, keyFor(4), byte(i))
				if err != nil {
					b.Fatal(err)
				}
				authors[i] = a
			}
			var syncs atomic.Int64
			sync0 := s.sync
			s.sync = func() error { syncs.Add(1); return sync0() }
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range c.writers {
				a := authors[w%len(authors)]
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if _, err := a.send(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			b.ReportMetric(float64(b.N)/float64(max(syncs.Load(), 1)), "ops/sync")
		})
	}
}

// BenchmarkCommit measures the store alone: batches the size of one chat
// message's writes (six keys, about 1.2 KB), each committed durably, from 1
// and from 32 concurrent writers. It is the ceiling that group commit gives
// BenchmarkDurableWrite, whose ops also need signing and applying.
func BenchmarkCommit(b *testing.B) {
	val := make([]byte, 200)
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := mustOpen(b, b.TempDir(), Options{})
			var syncs atomic.Int64
			sync0 := s.sync
			s.sync = func() error { syncs.Add(1); return sync0() }
			var next atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					batch := crdt.NewBatch()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						for k := range 6 {
							batch.Put(fmt.Sprintf("r/bench/%d/%016x", k, i), val)
						}
						if err := s.Commit(context.Background(), batch); err != nil {
							b.Error(err)
							return
						}
						batch.Reset()
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "batches/s")
			b.ReportMetric(float64(b.N)/float64(max(syncs.Load(), 1)), "batches/sync")
		})
	}
}

// BenchmarkReopen measures opening a store and the realm in it, with its
// digest, after 10,000 and after 1,000,000 chat messages, and the heap the
// open realm holds. Target: ≤ 0.5 s with 1,000,000 messages, with heap use
// that does not grow with history. Building the million-message store
// takes about a minute before the timing starts.
func BenchmarkReopen(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("messages=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			want := fill(b, dir, n)
			b.ResetTimer()
			var heap uint64
			for b.Loop() {
				before := heapInUse()
				s, err := Open(dir, Options{})
				if err != nil {
					b.Fatal(err)
				}
				ids, err := s.Realms()
				if err != nil || len(ids) != 1 {
					b.Fatalf("realms: %v, %v", ids, err)
				}
				r, err := crdt.Open(s, ids[0])
				if err != nil {
					b.Fatal(err)
				}
				if r.Digest() != want {
					b.Fatal("digest differs after reopen")
				}
				after := heapInUse()
				heap = after - min(before, after)
				runtime.KeepAlive(r)
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(heap), "heap-B")
		})
	}
}

// fill writes n messages into a new store in dir, closes it and returns
// the realm's digest. It commits a thousand ops at a time, unsynced: only
// what ends up on disk matters here.
func fill(b *testing.B, dir string, n int) crdt.Hash {
	b.Helper()
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	a := newAuthor(b, s, keyFor(5))
	batch := crdt.NewBatch()
	ctx := context.Background()
	for i := range n {
		a.wall++
		if _, _, err := a.r.Write(batch, a.priv, message(uint64(i)), a.wall); err != nil {
			b.Fatal(err)
		}
		if batch.Len() >= 4000 || i == n-1 {
			if err := s.Commit(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	dig := a.r.Digest()
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return dig
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
