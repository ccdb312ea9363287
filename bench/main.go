// Command bench measures realmsync next to its peers on one machine, in
// one run, and prints a markdown table that it also writes to
// RESULTS.md, with the date, the machine and the command:
//
//	cd bench && go run . [-full] [-out RESULTS.md]
//
// Quick mode (the default) finishes in two or three minutes; -full runs
// each row longer; -swarm runs rows 3 and 7 alone. The rows: the
// machine's floors (fdatasync, a loopback round trip, one ed25519
// verify), realmsync's durable write through its API from 1 and 32
// writers, a write on one daemon seen on another at 100 ops/s next to raw
// gossipsub carrying payloads of the same size, catch-up, 20 daemons in
// one realm at 50 and 200 ops/s, a partition of the 20 into two halves
// that both write (it needs root, for network namespaces), the bytes on
// disk per message, and the memory and restart time of a daemon holding
// many messages (1,000,000 in full mode); and go-ds-crdt doing the same
// work as key-value puts wherever it can.
// It is a module of its own, so that the peers it runs never enter the
// daemon's dependencies.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "gossip-peer" {
		if err := gossipPeer(); err != nil {
			fmt.Fprintln(os.Stderr, "gossip peer:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "crdt-peer" {
		if err := crdtPeer(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "go-ds-crdt peer:", err)
			os.Exit(1)
		}
		return
	}
	full := flag.Bool("full", false, "run each row longer (the quick mode takes a minute or two)")
	out := flag.String("out", "RESULTS.md", "also write the table here")
	swarmOnly := flag.Bool("swarm", false, "run only rows 3 and 7, the 20 nodes (the table is printed, not written)")
	flag.Parse()
	if *swarmOnly {
		*out = ""
	}
	if err := run(*full, *swarmOnly, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// sizes of each row, quick and full.
type sizes struct {
	floor, write1, write32, live, missed, held int
	crdtWrite32                                int // go-ds-crdt's 32 writers do about 200 puts/s: fewer
}

var (
	quick = sizes{floor: 200, write1: 300, write32: 3000, live: 300, missed: 500, held: 30_000, crdtWrite32: 1000}
	long  = sizes{floor: 2000, write1: 2000, write32: 30000, live: 2000, missed: 100_000, held: 1_000_000, crdtWrite32: 10000}
)

// crdtCatchUpLimit is how long go-ds-crdt's catch-up is waited for.
const crdtCatchUpLimit = 5 * time.Minute

// opSize is the size of a chat message's op as realmsync writes it: the
// raw gossipsub row carries payloads this big.
const opSize = 356

func run(full, swarmOnly bool, out string) error {
	n := quick
	mode := "quick"
	if full {
		n, mode = long, "full"
	}
	tmp, err := os.MkdirTemp("", "realmsync-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var t table
	step := func(what string) { fmt.Fprintf(os.Stderr, "bench: %s…\n", what) }

	if swarmOnly {
		return swarmOnlyRun(tmp, full)
	}
	step("the machine's floors")
	sync, err := fdatasync(tmp, n.floor)
	if err != nil {
		return err
	}
	t.add("floor", "fdatasync of 4 KiB", stats(sync), "")
	rtt, err := loopbackRTT(n.floor * 10)
	if err != nil {
		return err
	}
	t.add("floor", "loopback TCP round trip", stats(rtt), "")
	t.add("floor", "ed25519 verify", fmt.Sprintf("%.1f µs", us(verify(n.floor*10))), "")

	step("building realmsync")
	bin, err := buildRealmsync(tmp)
	if err != nil {
		return err
	}
	var ds []*daemon
	defer func() {
		for _, d := range ds {
			d.stop()
		}
	}()
	for _, name := range []string{"a", "b"} {
		dir := filepath.Join(tmp, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		d, err := startDaemon(bin, dir, name, onLoopback)
		if err != nil {
			return err
		}
		ds = append(ds, d)
	}
	a, b := ds[0], ds[1]
	realm, err := shareRealm(a, b)
	if err != nil {
		return err
	}

	var health []time.Duration
	err = paced(n.live, 100, func(int) error {
		t0 := time.Now()
		err := a.call("GET", "/v1/health", nil, nil)
		health = append(health, time.Since(t0))
		return err
	})
	if err != nil {
		return err
	}
	t.add("floor", "HTTP round trip to a daemon's API (GET /v1/health), 100 a second", stats(health),
		"what every API row pays, with the wake-ups of two idle processes")

	step("durable writes through the API")
	for _, w := range []struct{ writers, n int }{{1, n.write1}, {32, n.write32}} {
		lat, took, err := durableWrites(a, realm, w.n, w.writers)
		if err != nil {
			return err
		}
		t.note(fmt.Sprint("rs-write", w.writers), float64(w.n)/took.Seconds())
		t.add("1. durable write", fmt.Sprintf("realmsync, API to acknowledgement, %d writer(s)", w.writers),
			stats(lat), fmt.Sprintf("%.0f ops/s", float64(w.n)/took.Seconds()))
	}

	step("a write on a seen on b, at 100 ops/s")
	meter := meterPort(a.p2pPort())
	live, delivered, err := liveLatency(a, b, realm, n.live, 100)
	if err != nil {
		return err
	}
	rsWire, rsPer := meter.perOp(n.live)
	t.note("rs-live", p50ms(live))
	t.add("2. write on A seen on B", "realmsync, API on A to the event on B's stream", stats(live),
		fmt.Sprintf("%d of %d delivered", delivered, n.live))
	raw, rawWire, err := rawGossip(n.live, 100, opSize)
	if err != nil {
		return err
	}
	t.note("raw-live", p50ms(raw))
	t.add("2. write on A seen on B", fmt.Sprintf("raw gossipsub, %d-byte payloads", opSize), stats(raw),
		fmt.Sprintf("realmsync p50 is %.1f× this (target ≤ 1.5×)", t.fig["rs-live"]/t.fig["raw-live"]))
	if rsPer > 0 {
		t.note("rs-wire", rsPer)
	}
	t.add("5. bytes on the wire", "realmsync, a write on A to B (TCP payload of A's libp2p connections, both ways)", rsWire,
		fmt.Sprintf("a chat message's op is %d bytes; during row 2", opSize))
	t.add("5. bytes on the wire", "raw gossipsub, the same", rawWire, fmt.Sprintf("payloads of %d bytes", opSize))

	step(fmt.Sprintf("realmsync: b misses %d messages and comes back", n.missed))
	caught, wire, rounds, err := catchUp(bin, a, b, realm, n.missed)
	if err != nil {
		return err
	}
	t.note("rs-catchup", float64(caught)/float64(time.Millisecond))
	t.add("4. catch-up", fmt.Sprintf("realmsync, a daemon that missed %d messages starts again", n.missed),
		fmt.Sprintf("%s to the same message count", ms(caught)),
		fmt.Sprintf("%.0f bytes on loopback per message; %.0f round trips (catch-up rounds that brought ops: one ask, ranges streamed back)",
			float64(wire)/float64(n.missed), rounds))

	step("go-ds-crdt: the same writes, the same write seen on another peer, the same catch-up")
	if err := crdtRows(&t, tmp, n, caught); err != nil {
		return fmt.Errorf("go-ds-crdt: %w", err)
	}

	if err := swarmRows(&t, bin, tmp, full); err != nil {
		return err
	}

	step(fmt.Sprintf("a daemon holding %d messages", n.held))
	if err := fill(a, realm, n.held); err != nil {
		return err
	}
	held := n.held + n.write1 + n.write32 + n.live + n.missed
	disk, err := diskBytes(a.dir)
	if err != nil {
		return err
	}
	t.note("rs-disk", float64(disk)/float64(held))
	t.add("5. bytes on disk", fmt.Sprintf("realmsync, data dir of a daemon holding %d messages", held),
		fmt.Sprintf("%.0f bytes per message", float64(disk)/float64(held)), "pebble, before compactions settle")
	rss, err := a.rss()
	if err != nil {
		return err
	}
	took, err := a.restart(bin, realm)
	if err != nil {
		return err
	}
	rssAfter, err := a.rss()
	if err != nil {
		return err
	}
	t.add("6. memory and restart", fmt.Sprintf("realmsync daemon holding %d messages", held),
		fmt.Sprintf("restart to serving %s", ms(took)),
		fmt.Sprintf("resident %.0f MiB while writing, %.0f MiB after the restart", float64(rss)/(1<<20), float64(rssAfter)/(1<<20)))

	report := t.markdown(mode)
	fmt.Print(report)
	if out != "" {
		return os.WriteFile(out, []byte(report), 0o644)
	}
	return nil
}

// row is one line of the results.
type row struct{ group, what, value, note string }

type table struct {
	rows []row
	fig  map[string]float64 // figures the targets compare, by name
}

// note records a figure that a target compares.
func (t *table) note(name string, v float64) {
	if t.fig == nil {
		t.fig = make(map[string]float64)
	}
	t.fig[name] = v
}

// verdicts says, for each target the figures allow, whether it is met.
func (t *table) verdicts() []string {
	var out []string
	judge := func(what string, ok bool, detail string) {
		word := "met"
		if !ok {
			word = "MISSED"
		}
		out = append(out, fmt.Sprintf("- %s: %s (%s)", what, word, detail))
	}
	ahead := func(what, ours, theirs string, higherBetter bool, unit string) {
		a, okA := t.fig[ours]
		b, okB := t.fig[theirs]
		if !okA || !okB {
			return
		}
		judge("realmsync ahead of go-ds-crdt: "+what, (a > b) == higherBetter && a != b,
			fmt.Sprintf("%.4g against %.4g %s", a, b, unit))
	}
	ahead("durable writes, 1 writer", "rs-write1", "crdt-write1", true, "ops/s")
	ahead("durable writes, 32 writers", "rs-write32", "crdt-write32", true, "ops/s")
	ahead("write on A seen on B, p50", "rs-live", "crdt-live", false, "ms")
	ahead("catch-up", "rs-catchup", "crdt-catchup", false, "ms")
	ahead("bytes on disk", "rs-disk", "crdt-disk", false, "bytes per message or key")
	ahead("bytes on the wire", "rs-wire", "crdt-wire", false, "bytes per message or key")
	for _, rate := range swarmRates {
		a, okA := t.fig[fmt.Sprint("rs-twenty-share", rate)]
		b, okB := t.fig[fmt.Sprint("crdt-twenty-share", rate)]
		if !okA || !okB {
			continue
		}
		judge(fmt.Sprintf("realmsync ahead of go-ds-crdt: 20 nodes at %.0f ops/s, share delivered", rate),
			a >= b, fmt.Sprintf("%.2f%% against %.2f%%", 100*a, 100*b))
		if b < 1 {
			// Its p99 is of the deliveries that were made, the quick ones.
			out = append(out, fmt.Sprintf("- realmsync ahead of go-ds-crdt: 20 nodes at %.0f ops/s, p99: not comparable "+
				"(go-ds-crdt's p99 is of the %.2f%% it delivered)", rate, 100*b))
			continue
		}
		ahead(fmt.Sprintf("20 nodes at %.0f ops/s, p99", rate), fmt.Sprint("rs-twenty", rate), fmt.Sprint("crdt-twenty", rate), false, "ms")
	}
	ahead("partition healed, time to converge", "rs-partition", "crdt-partition", false, "s")
	if a, b := t.fig["rs-catchup"], t.fig["crdt-catchup"]; a > 0 && b > 0 {
		judge("catch-up ≥ 10× faster than go-ds-crdt's", b/a >= 10, fmt.Sprintf("%.0f×", b/a))
	}
	if a, b := t.fig["rs-live"], t.fig["raw-live"]; a > 0 && b > 0 {
		judge("live latency p50 within 1.5× of raw gossipsub's", a/b <= 1.5, fmt.Sprintf("%.1f×", a/b))
	}
	if w, ok := t.fig["rs-wire"]; ok {
		judge(fmt.Sprintf("bytes on the wire per op ≤ the op's %d bytes + 150 (node issue)", opSize), w <= opSize+150,
			fmt.Sprintf("%.0f bytes", w))
	}
	if p99, ok := t.fig["rs-twenty200"]; ok {
		share := t.fig["rs-twenty-share200"]
		judge("20 nodes at 200 ops/s: p99 ≤ 150 ms with every op delivered (node issue)", p99 <= 150 && share == 1,
			fmt.Sprintf("p99 %.1f ms, %.2f%% delivered", p99, 100*share))
	}
	return out
}

func (t *table) add(group, what, value, note string) {
	t.rows = append(t.rows, row{group, what, value, note})
}

func (t *table) markdown(mode string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# realmsync benchmarks\n\n")
	fmt.Fprintf(&b, "- date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- machine: %d cores, %s, %s/%s, %s\n", runtime.NumCPU(), cpuModel(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	cmd := "cd bench && go run ."
	if mode == "full" {
		cmd += " -full"
	}
	fmt.Fprintf(&b, "- command: `%s` (%s mode)\n\n", cmd, mode)
	fmt.Fprintf(&b, "| row | what | latency | note |\n|---|---|---|---|\n")
	for _, r := range t.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.group, r.what, r.value, r.note)
	}
	if v := t.verdicts(); len(v) > 0 {
		fmt.Fprintf(&b, "\nTargets:\n\n%s\n", strings.Join(v, "\n"))
	}
	return b.String()
}

// cpuModel reads the processor's name, where Linux tells it.
func cpuModel() string {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// stats sorts lat and gives its p50, p99 and max.
func stats(lat []time.Duration) string {
	if len(lat) == 0 {
		return "no samples"
	}
	slices.Sort(lat)
	return fmt.Sprintf("p50 %s, p99 %s, max %s", ms(pct(lat, 50)), ms(pct(lat, 99)), ms(lat[len(lat)-1]))
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// p50ms is the median of lat in milliseconds.
func p50ms(lat []time.Duration) float64 { return pctMs(lat, 50) }

// pctMs is the p-th percentile of lat in milliseconds (0 for no samples).
func pctMs(lat []time.Duration, p int) float64 {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return float64(pct(lat, p)) / float64(time.Millisecond)
}

// crdtRows runs two go-ds-crdt peers as processes and adds the rows they
// share with realmsync.
func crdtRows(t *table, tmp string, n sizes, ours time.Duration) error {
	var peers []*peerProc
	defer func() {
		for _, p := range peers {
			p.stop()
		}
	}()
	for _, name := range []string{"crdt-a", "crdt-b"} {
		dir := filepath.Join(tmp, name)
		p, err := startPeer(onLoopback, "crdt-peer", dir)
		if err != nil {
			return err
		}
		p.dir = dir
		peers = append(peers, p)
	}
	a, b := peers[0], peers[1]
	if err := b.do(map[string]any{"op": "connect", "addr": a.addr}, nil); err != nil {
		return err
	}
	for _, w := range []struct{ writers, n int }{{1, n.write1}, {32, n.crdtWrite32}} {
		var rep struct {
			Lat     []float64
			Elapsed float64
		}
		if err := a.do(map[string]any{"op": "burst", "n": w.n, "writers": w.writers, "size": opSize, "prefix": fmt.Sprint("w", w.writers)}, &rep); err != nil {
			return err
		}
		t.note(fmt.Sprint("crdt-write", w.writers), float64(w.n)/rep.Elapsed)
		t.add("1. durable write", fmt.Sprintf("go-ds-crdt, Put to return in its process (synced pebble), %d writer(s)", w.writers),
			stats(durations(rep.Lat)), fmt.Sprintf("%.0f ops/s", float64(w.n)/rep.Elapsed))
	}
	// The paced row starts once b holds what the bursts wrote.
	var count struct{ N int }
	for want, deadline := n.write1+n.crdtWrite32, time.Now().Add(2*time.Minute); count.N < want; {
		if time.Now().After(deadline) {
			return fmt.Errorf("the second peer holds %d of %d keys after two minutes", count.N, want)
		}
		time.Sleep(200 * time.Millisecond)
		if err := b.do(map[string]any{"op": "count"}, &count); err != nil {
			return err
		}
	}
	b.do(map[string]any{"op": "report"}, nil) // forget what the bursts brought
	meter := meterPort(addrPort(a.addr))
	if err := a.do(map[string]any{"op": "paced", "n": n.live, "rate": 100, "size": opSize, "prefix": "live"}, nil); err != nil {
		return err
	}
	var rep struct{ Lat []float64 }
	deadline := time.Now().Add(30 * time.Second)
	var lat []time.Duration
	for len(lat) < n.live && time.Now().Before(deadline) {
		if err := b.do(map[string]any{"op": "report"}, &rep); err != nil {
			return err
		}
		lat = append(lat, durations(rep.Lat)...)
	}
	wire, per := meter.perOp(n.live)
	t.note("crdt-live", p50ms(lat))
	t.add("2. write on A seen on B", "go-ds-crdt, Put on A to the put hook on B", stats(lat),
		fmt.Sprintf("%d of %d delivered", len(lat), n.live))
	if per > 0 {
		t.note("crdt-wire", per)
	}
	t.add("5. bytes on the wire", "go-ds-crdt, a Put on A to B (TCP payload of A's libp2p connections, both ways)", wire,
		fmt.Sprintf("values of %d bytes; during row 2", opSize))
	// Catch-up: b stops, a writes, b starts again and dials a.
	b.stop()
	if err := a.do(map[string]any{"op": "burst", "n": n.missed, "writers": 1, "size": opSize, "prefix": "missed"}, nil); err != nil {
		return err
	}
	var want struct{ N int }
	if err := a.do(map[string]any{"op": "count"}, &want); err != nil {
		return err
	}
	wire0 := loopbackBytes()
	start := time.Now()
	nb, err := startPeer(onLoopback, "crdt-peer", b.dir)
	if err != nil {
		return err
	}
	nb.dir, peers[1], b = b.dir, nb, nb
	if err := b.do(map[string]any{"op": "connect", "addr": a.addr}, nil); err != nil {
		return err
	}
	// Counting is a query of every key: every 50 ms for a small catch-up,
	// every second for a large one, which it would slow down.
	poll := 50 * time.Millisecond
	if n.missed > 10_000 {
		poll = time.Second
	}
	for count.N = 0; count.N < want.N && time.Since(start) < crdtCatchUpLimit; {
		time.Sleep(poll)
		if err := b.do(map[string]any{"op": "count"}, &count); err != nil {
			return err
		}
	}
	took := time.Since(start)
	value, than := fmt.Sprintf("%s to the same key count", ms(took)), ""
	if count.N < want.N {
		// A lower bound: the ratio below is one too.
		value, than = fmt.Sprintf("not caught up in %s: holds %d of %d keys", crdtCatchUpLimit, count.N, want.N), "at least "
	}
	t.note("crdt-catchup", float64(took)/float64(time.Millisecond))
	t.add("4. catch-up", fmt.Sprintf("go-ds-crdt, a peer that missed %d keys starts again", n.missed), value,
		fmt.Sprintf("%.0f bytes on loopback per key; realmsync is %s%.0f× faster (target ≥ 10×)",
			float64(loopbackBytes()-wire0)/float64(n.missed), than, float64(took)/float64(ours)))

	disk, err := diskBytes(a.dir)
	if err != nil {
		return err
	}
	keys := n.write1 + n.crdtWrite32 + n.live + n.missed
	t.note("crdt-disk", float64(disk)/float64(keys))
	t.add("5. bytes on disk", fmt.Sprintf("go-ds-crdt, data dir of a peer holding %d keys", keys),
		fmt.Sprintf("%.0f bytes per key", float64(disk)/float64(keys)), fmt.Sprintf("values of %d bytes", opSize))
	return nil
}

func durations(ms []float64) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, v := range ms {
		out[i] = time.Duration(v * float64(time.Millisecond))
	}
	return out
}

// fill writes n messages into the realm as fast as 32 writers go,
// saying how far it is every 100,000.
func fill(d *daemon, realm string, n int) error {
	for done := 0; done < n; {
		chunk := min(100_000, n-done)
		if _, _, err := durableWrites(d, realm, chunk, 32); err != nil {
			return err
		}
		done += chunk
		if n > 100_000 {
			fmt.Fprintf(os.Stderr, "bench: %d of %d messages written\n", done, n)
		}
	}
	return nil
}

func ms(d time.Duration) string  { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
