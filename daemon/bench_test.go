package daemon

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/realmsync/realmsync/crdt"
)

// BenchmarkNodeWrite measures local chat messages written through a
// node, as the API writes them: each applied, signed (alone or in a
// group), synced to pebble on disk and only then acknowledged (and
// published, to no one here). From 1 writer, and from 32 writers on one
// realm and spread over four. Target: ≥ 20,000 ops/s with 32 writers,
// thanks to group commit and groups of combined writes.
func BenchmarkNodeWrite(b *testing.B) {
	// As the realmsync binary runs its node.
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	TuneGC()
	for _, c := range []struct{ writers, realms int }{{1, 1}, {32, 1}, {32, 4}} {
		b.Run(fmt.Sprintf("writers=%d/realms=%d", c.writers, c.realms), func(b *testing.B) {
			n, err := New(Config{DataDir: b.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			ctx := context.Background()
			ids := make([]crdt.RealmID, c.realms)
			for i := range ids {
				if ids[i], err = n.CreateRealm(ctx, fmt.Sprint("bench ", i)); err != nil {
					b.Fatal(err)
				}
			}
			var left, signed atomic.Int64
			left.Store(int64(b.N))
			b.ResetTimer()
			cpu0 := cpuTime()
			var wg sync.WaitGroup
			for w := range c.writers {
				id := ids[w%len(ids)]
				wg.Go(func() {
					for i := left.Add(-1); i >= 0; i = left.Add(-1) {
						op, err := n.Write(ctx, id, chatMessage())
						if err != nil {
							b.Error(err)
							return
						}
						if op.Signed() {
							signed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			b.ReportMetric(float64(b.N)/float64(max(signed.Load(), 1)), "ops/signature")
		})
	}
}

// chatMessage is a new chat message of ordinary length, its id left to the
// engine as the API leaves it.
func chatMessage() *crdt.Set {
	return &crdt.Set{Collection: crdt.MessagesCollection,
		Fields: []crdt.Field{{Name: "text", Value: []byte(`"a chat message of ordinary length"`)}}}
}

// cpuTime returns the CPU time this process has used, user and system: on
// a busy machine it says more about a change than wall time does.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
