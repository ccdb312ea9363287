package daemon

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These benchmarks run nodes as separate processes on loopback and each
// plays one scenario once, reporting its figures as metrics; run them
// with -benchtime=1x:
//
//	go test -run '^$' -bench 'Proc' -benchtime=1x ./daemon

// shareRealm creates a realm on creator and admits the others to it.
func shareRealm(tb testing.TB, creator *proc, members ...*proc) string {
	tb.Helper()
	realm := creator.call(request{Op: "create", Name: "bench"}).Realm
	for _, m := range members {
		keys := creator.call(request{Op: "grant", Realm: realm, Peer: m.peer, Name: m.name}).Keys
		m.call(request{Op: "join", Realm: realm, Keys: keys})
	}
	return realm
}

// converged waits until every node shows the same digest.
func converged(tb testing.TB, realm string, procs ...*proc) {
	tb.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		want := procs[0].call(request{Op: "digest", Realm: realm}).Digest
		same := true
		for _, p := range procs[1:] {
			same = same && p.call(request{Op: "digest", Realm: realm}).Digest == want
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("the nodes did not converge in 2 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// percentile returns the p-th percentile (0..100) of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p/100))]
}

// wire counts what crossed the loopback interface: every packet of the
// benchmark's nodes (and of anything else on the machine's loopback).
type wire struct{ bytes, packets int64 }

// tcpHeader is the size of the IPv4 and TCP headers of a Linux loopback
// packet: 20 and 20, plus 12 of the timestamp option.
const tcpHeader = 52

func loopback(tb testing.TB) wire {
	tb.Helper()
	read := func(name string) int64 {
		raw, err := os.ReadFile("/sys/class/net/lo/statistics/" + name)
		if err != nil {
			tb.Skipf("no loopback counters here: %v", err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		return n
	}
	return wire{read("tx_bytes"), read("tx_packets")}
}

// report reports what crossed the wire since w, per op: in packets, and
// in TCP payload (what libp2p sent: the ops and their framing).
func (w wire) report(b *testing.B, ops int) {
	now := loopback(b)
	bytes, packets := now.bytes-w.bytes, now.packets-w.packets
	b.ReportMetric(float64(bytes)/float64(ops), "wire-bytes/op")
	b.ReportMetric(float64(bytes-tcpHeader*packets)/float64(ops), "payload-bytes/op")
}

// latencies collects and sorts what the nodes measured, and counts the
// ops that came by catch-up rather than gossip.
func latencies(procs ...*proc) (all []float64, caughtUp int) {
	for _, p := range procs {
		rep := p.call(request{Op: "latencies"})
		all = append(all, rep.Latencies...)
		caughtUp += rep.Count
	}
	slices.Sort(all)
	return all, caughtUp
}

// BenchmarkProcLive: a writes 1,000 chat messages at 100 ops/s; each is
// timed from the start of its write on a (which includes the sync to
// disk) to its arrival on b. Targets: p50 ≤ 1 ms, p99 ≤ 5 ms; bytes on
// the wire per op ≤ the op's size + 150.
func BenchmarkProcLive(b *testing.B) {
	const ops, rate = 1000, 100
	a, bb := startProc(b, "a"), startProc(b, "b")
	realm := shareRealm(b, a, bb)
	bb.call(request{Op: "connect", Addrs: a.addr})
	converged(b, realm, a, bb)
	a.call(request{Op: "write", Realm: realm, Count: 50, Rate: rate}) // the mesh forms
	converged(b, realm, a, bb)
	latencies(bb) // forget the warm-up

	b.ResetTimer()
	before := loopback(b)
	w := a.call(request{Op: "write", Realm: realm, Count: ops, Rate: rate})
	converged(b, realm, a, bb)
	before.report(b, ops)
	b.StopTimer()

	lat, caught := latencies(bb)
	slices.Sort(w.Acks)
	b.ReportMetric(percentile(w.Acks, 50), "ack-p50-ms")
	b.ReportMetric(percentile(lat, 50), "p50-ms")
	b.ReportMetric(percentile(lat, 99), "p99-ms")
	b.ReportMetric(percentile(lat, 100), "max-ms")
	b.ReportMetric(float64(len(lat))/ops, "delivered")
	b.ReportMetric(float64(caught)/ops, "by-catch-up")
	b.ReportMetric(float64(w.OpBytes), "op-bytes")
}

// BenchmarkProcTwenty: 20 nodes in one realm, each dialing the next three,
// write 200 ops/s together for ten seconds, taking turns. Every op is timed from the
// start of its write to its arrival on each other node. Target: p99 ≤ 150
// ms with every op delivered.
func BenchmarkProcTwenty(b *testing.B) {
	const nodes, perNode, rate = 20, 100, 10.0
	var procs []*proc
	for i := range nodes {
		procs = append(procs, startProc(b, fmt.Sprint("n", i)))
	}
	realm := shareRealm(b, procs[0], procs[1:]...)
	for i, p := range procs {
		var addrs []string
		for k := 1; k <= 3; k++ {
			addrs = append(addrs, procs[(i+k)%nodes].addr...)
		}
		p.call(request{Op: "connect", Addrs: addrs})
	}
	converged(b, realm, procs...)
	for _, p := range procs {
		p.call(request{Op: "write", Realm: realm, Count: 5, Rate: 50}) // the mesh forms
	}
	converged(b, realm, procs...)
	latencies(procs...)

	b.ResetTimer()
	cpu0 := totalCPU(procs)
	done := make(chan struct{})
	// The nodes take turns: one write every 1/200 s in all, not twenty at
	// once every tenth of a second.
	start := time.Now().Add(100 * time.Millisecond)
	turn := time.Duration(float64(time.Second) / (rate * nodes))
	for i, p := range procs {
		go func() {
			p.call(request{Op: "write", Realm: realm, Count: perNode, Rate: rate, At: start.Add(time.Duration(i) * turn).UnixNano()})
			done <- struct{}{}
		}()
	}
	for range procs {
		<-done
	}
	converged(b, realm, procs...)
	b.StopTimer()
	cpu := totalCPU(procs) - cpu0

	lat, caught := latencies(procs...)
	want := nodes * perNode * (nodes - 1)
	b.ReportMetric(float64(cpu.Microseconds())/float64(nodes*perNode), "cpu-µs/op")
	b.ReportMetric(percentile(lat, 50), "p50-ms")
	b.ReportMetric(percentile(lat, 99), "p99-ms")
	b.ReportMetric(percentile(lat, 100), "max-ms")
	b.ReportMetric(float64(len(lat))/float64(want), "delivered")
	b.ReportMetric(float64(caught)/float64(want), "by-catch-up")
}

// BenchmarkProcCatchUp: b, admitted but not connected, misses 100,000
// chat messages that a writes; then it dials a, and catch-up brings it to
// a's digest. Target: ≤ 2 s.
func BenchmarkProcCatchUp(b *testing.B) {
	const ops = 100_000
	a, bb := startProc(b, "a"), startProc(b, "b")
	realm := shareRealm(b, a, bb)
	a.call(request{Op: "write", Realm: realm, Count: ops, Writers: 32})

	b.ResetTimer()
	before := loopback(b)
	cpuA, cpuB := a.cpu(), bb.cpu()
	start := time.Now()
	bb.call(request{Op: "connect", Addrs: a.addr})
	converged(b, realm, a, bb)
	took := time.Since(start)
	before.report(b, ops)
	b.StopTimer()

	b.ReportMetric(took.Seconds(), "catch-up-s")
	b.ReportMetric((a.cpu() - cpuA).Seconds(), "cpu-a-s")
	b.ReportMetric((bb.cpu() - cpuB).Seconds(), "cpu-b-s")
}

// totalCPU is the CPU time the nodes have used so far, together.
func totalCPU(procs []*proc) time.Duration {
	var sum time.Duration
	for _, p := range procs {
		sum += p.cpu()
	}
	return sum
}
