package daemon

import (
	"math"
	"os"
	"runtime/debug"
)

// GC settings for a process whose main job is a node. Most of a node's
// memory is pebble's memtables and block cache, outside the Go heap; the
// heap itself is small and churns with every message (libp2p frames,
// pubsub RPCs, decoded ops), so the default GOGC of 100 collects it very
// often. With 20 nodes on two cores, GOGC 400 cut the CPU per op by about
// 7% and the 99th percentile of delivery from 420-570 ms to 140-210 ms
// (BenchmarkProcTwenty). The soft limit keeps a heap that grows for real
// from taking five times its size.
const (
	gcPercent = 400
	gcLimit   = 1 << 30 // bytes
)

// TuneGC sets the garbage collector for a process that runs a node as its
// main job, unless GOGC or GOMEMLIMIT in the environment say otherwise. A
// program that embeds a node among other work should leave it alone.
func TuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" && debug.SetMemoryLimit(-1) == math.MaxInt64 {
		debug.SetMemoryLimit(gcLimit)
	}
}
