package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Rows 3 and 7: twenty nodes in one realm (or twenty go-ds-crdt peers on
// one topic), connected the same way for both systems: node i dials node
// (i-1)/3, a tree of fan-out three, as people who invite each other
// build one. realmsync's node i joins through an invite that node
// (i-1)/3 created, so that is the node it dials first (the nodes that
// invite are admins, the others writers); members then pass on each
// other's addresses and each node keeps a few more members connected.
// go-ds-crdt's peers keep the tree.
//
// Where network namespaces can be made (root, iproute2), each node runs
// in a namespace of its own with its own address, the halves on two
// bridges, and row 7 cuts the link between the bridges; elsewhere all run
// on loopback and row 7 is skipped with the reason.

const swarmNodes = 20

// parent is the node that node i dials.
func parent(i int) int { return (i - 1) / 3 }

// swarmSizes sets how long rows 3 and 7 write.
type swarmSizes struct {
	phase time.Duration // writing at each rate of row 3, and on each side of the cut
	wait  time.Duration // the longest wait for deliveries or convergence
}

var (
	quickSwarm = swarmSizes{phase: 2 * time.Second, wait: 8 * time.Second}
	longSwarm  = swarmSizes{phase: 20 * time.Second, wait: time.Minute}
)

// swarmRates are row 3's aggregate write rates; partitionRate is what
// each half writes while cut off.
var swarmRates = []float64{50, 200}

const partitionRate = 50.0

// places puts each node in its namespace of sp, the first half on one
// side of the cut and the rest on the other; with no split, all on
// loopback.
func places(sp *split) []place {
	at := make([]place, swarmNodes)
	for i := range at {
		at[i] = onLoopback
		if sp != nil {
			at[i] = sp.node(i)
		}
	}
	return at
}

// each runs fn for 0..n-1 concurrently and returns the first error.
func each(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// swarmOnlyRun builds realmsync and runs rows 3 and 7 alone.
func swarmOnlyRun(tmp string, full bool) error {
	bin, err := buildRealmsync(tmp)
	if err != nil {
		return err
	}
	var t table
	if err := swarmRows(&t, bin, tmp, full); err != nil {
		return err
	}
	fmt.Print(t.markdown("rows 3 and 7 only"))
	return nil
}

// swarmRows runs rows 3 and 7 for realmsync and for go-ds-crdt.
func swarmRows(t *table, bin, tmp string, full bool) error {
	fmt.Fprintln(os.Stderr, "bench: 20 nodes in one realm, and 20 go-ds-crdt peers: live at 50 and 200 ops/s, then a partition…")
	sz := quickSwarm
	if full {
		sz = longSwarm
	}
	sp, err := newSplit(swarmNodes)
	why := ""
	if err != nil {
		sp, why = nil, err.Error()
	} else {
		defer sp.close()
	}
	if err := realmsyncSwarm(t, bin, tmp, sz, sp); err != nil {
		return fmt.Errorf("realmsync, 20 nodes: %w", err)
	}
	if err := crdtSwarm(t, tmp, sz, sp); err != nil {
		return fmt.Errorf("go-ds-crdt, 20 peers: %w", err)
	}
	if sp == nil {
		t.add("7. partition", "20 nodes cut in two halves that both write, then healed", "not run", "the row "+why)
	}
	return nil
}

func realmsyncSwarm(t *table, bin, tmp string, sz swarmSizes, sp *split) error {
	at := places(sp)
	ds := make([]*daemon, swarmNodes)
	defer each(swarmNodes, func(i int) error {
		if ds[i] != nil {
			ds[i].stop()
		}
		return nil
	})
	err := each(swarmNodes, func(i int) error {
		dir := filepath.Join(tmp, fmt.Sprint("rs", i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		d, err := startDaemon(bin, dir, fmt.Sprint("rs", i), at[i])
		ds[i] = d
		return err
	})
	if err != nil {
		return err
	}
	var r struct{ ID string }
	if err := ds[0].call("POST", "/v1/realms", map[string]string{"name": "twenty"}, &r); err != nil {
		return err
	}
	realm := r.ID
	for i := 1; i < swarmNodes; i++ {
		role := "writer"
		if parent(swarmNodes-1) >= i {
			role = "admin" // it invites others: only admins may
		}
		if err := admit(ds[parent(i)], ds[i], realm, role); err != nil {
			return err
		}
	}
	ws := make([]*watcher, swarmNodes)
	defer func() {
		for _, w := range ws {
			if w != nil {
				w.close()
			}
		}
	}()
	for i, d := range ds {
		if ws[i], err = watch(d, realm); err != nil {
			return err
		}
	}
	// Each node writes once and all see it: the meshes have formed.
	var warm []sent
	for i, d := range ds {
		id, err := d.post(realm)
		if err != nil {
			return err
		}
		warm = append(warm, sent{id: id, at: time.Now(), from: i})
	}
	if _, got, due := arrivals(ws, warm, time.Minute); got < due {
		seen := make([]int, swarmNodes)
		for i, w := range ws {
			for _, m := range warm {
				if _, ok := w.when(m.id); ok {
					seen[i]++
				}
			}
		}
		counts := make([]int, swarmNodes)
		for i, d := range ds {
			counts[i], _ = d.messages(realm)
		}
		return fmt.Errorf("warming up: %d of %d deliveries in a minute; events seen by each node %v, messages held %v", got, due, seen, counts)
	}

	time.Sleep(3 * time.Second) // a few gossip heartbeats: the meshes settle
	applied, err := appliedBy(ds)
	if err != nil {
		return err
	}
	for _, rate := range swarmRates {
		n := int(rate * sz.phase.Seconds())
		var msgs []sent
		err := paced(n, rate, func(i int) error {
			from := i % swarmNodes
			t0 := time.Now()
			id, err := ds[from].post(realm)
			msgs = append(msgs, sent{id: id, at: t0, from: from})
			return err
		})
		if err != nil {
			return err
		}
		lat, got, due := arrivals(ws, msgs, sz.wait)
		before := applied
		if applied, err = appliedBy(ds); err != nil {
			return err
		}
		t.note(fmt.Sprint("rs-twenty", rate), pctMs(lat, 99))
		t.note(fmt.Sprint("rs-twenty-share", rate), float64(got)/float64(due))
		t.add("3. 20 nodes", fmt.Sprintf("realmsync, %.0f ops/s in all, API on one node to the event on each other", rate),
			stats(lat), fmt.Sprintf("%s; %.0f came by catch-up, not gossip", delivered(got, due), applied.catchUp-before.catchUp))
	}
	if sp == nil {
		return nil
	}

	took, counts, want, err := partition(sp, sz, func(i int) error {
		_, err := ds[i].post(realm)
		return err
	}, func(i int) (int, error) { return ds[i].messages(realm) })
	if err != nil {
		return err
	}
	partitionRow(t, "rs-partition", "realmsync, 20 nodes cut in two halves that both write, then healed",
		"messages", sz, took, counts, want)
	return nil
}

// applied counts the ops that the daemons applied from peers, by how
// they came.
type appliedOps struct{ gossip, catchUp float64 }

func appliedBy(ds []*daemon) (appliedOps, error) {
	var sum appliedOps
	for _, d := range ds {
		m, err := d.metrics("realmsync_ops_applied_total")
		if err != nil {
			return sum, err
		}
		sum.gossip += m[`realmsync_ops_applied_total{source="gossip"}`]
		sum.catchUp += m[`realmsync_ops_applied_total{source="catchup"}`]
	}
	return sum, nil
}

// partition cuts sp, lets each half write at partitionRate for a phase
// through write(i), heals, and waits (up to sz.wait) until count(i) is
// the same on every node and holds every write. It returns the time from
// healing to then, or 0 if that did not happen, and the counts seen last
// and the count wanted. A count above the writes made is an error.
func partition(sp *split, sz swarmSizes, write func(i int) error, count func(i int) (int, error)) (took time.Duration, counts []int, want int, err error) {
	before, err := count(0)
	if err != nil {
		return 0, nil, 0, err
	}
	if err := sp.cut(); err != nil {
		return 0, nil, 0, err
	}
	n := int(partitionRate * sz.phase.Seconds())
	half := swarmNodes / 2
	err = each(2, func(side int) error {
		return paced(n, partitionRate, func(i int) error { return write(side*half + i%half) })
	})
	if err != nil {
		sp.heal()
		return 0, nil, 0, err
	}
	want = before + 2*n
	if err := sp.heal(); err != nil {
		return 0, nil, 0, err
	}
	healed := time.Now()
	for {
		counts = make([]int, swarmNodes)
		if err := each(swarmNodes, func(i int) (err error) { counts[i], err = count(i); return err }); err != nil {
			return 0, nil, 0, err
		}
		done := true
		for i, c := range counts {
			if c > want {
				return 0, nil, 0, fmt.Errorf("node %d holds %d writes, more than the %d written", i, c, want)
			}
			done = done && c == want
		}
		if done {
			return time.Since(healed), counts, want, nil
		}
		if time.Since(healed) > sz.wait {
			return 0, counts, want, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// partitionRow adds row 7 for one system.
func partitionRow(t *table, fig, what, unit string, sz swarmSizes, took time.Duration, counts []int, want int) {
	if took == 0 {
		t.note(fig, math.Inf(1))
		t.add("7. partition", what, fmt.Sprintf("not converged %s after healing", sz.wait),
			fmt.Sprintf("%s held from %d to %d of %d", unit, slices.Min(counts), slices.Max(counts), want))
		return
	}
	t.note(fig, took.Seconds())
	t.add("7. partition", what, fmt.Sprintf("%.2f s from healing to the same %s everywhere", took.Seconds(), unit),
		fmt.Sprintf("each holds all %d, none lost or doubled", want))
}

// delivered says what share of the due deliveries were made.
func delivered(got, due int) string {
	return fmt.Sprintf("%.2f%% of %d deliveries", 100*float64(got)/float64(due), due)
}

func crdtSwarm(t *table, tmp string, sz swarmSizes, sp *split) error {
	at := places(sp)
	peers := make([]*peerProc, swarmNodes)
	defer each(swarmNodes, func(i int) error {
		if peers[i] != nil {
			peers[i].stop()
		}
		return nil
	})
	err := each(swarmNodes, func(i int) error {
		dir := filepath.Join(tmp, fmt.Sprint("crdt", i))
		p, err := startPeer(at[i], "crdt-peer", dir)
		peers[i] = p
		return err
	})
	if err != nil {
		return err
	}
	err = each(swarmNodes-1, func(i int) error {
		return peers[i+1].do(map[string]any{"op": "connect", "addr": peers[parent(i+1)].addr}, nil)
	})
	if err != nil {
		return err
	}
	for _, rate := range swarmRates {
		n := int(rate * sz.phase.Seconds() / swarmNodes)
		err := each(swarmNodes, func(i int) error {
			return peers[i].do(map[string]any{"op": "paced", "n": n, "rate": rate / swarmNodes, "size": opSize,
				"prefix": fmt.Sprintf("r%.0f-%d", rate, i)}, nil)
		})
		if err != nil {
			return err
		}
		due := n * swarmNodes * (swarmNodes - 1)
		var lat []time.Duration
		for deadline := time.Now().Add(sz.wait); len(lat) < due && time.Now().Before(deadline); {
			reps := make([][]float64, swarmNodes)
			err := each(swarmNodes, func(i int) error {
				var rep struct{ Lat []float64 }
				err := peers[i].do(map[string]any{"op": "report"}, &rep)
				reps[i] = rep.Lat
				return err
			})
			if err != nil {
				return err
			}
			for _, r := range reps {
				lat = append(lat, durations(r)...)
			}
		}
		if len(lat) > 0 {
			t.note(fmt.Sprint("crdt-twenty", rate), pctMs(lat, 99))
		}
		t.note(fmt.Sprint("crdt-twenty-share", rate), float64(len(lat))/float64(due))
		t.add("3. 20 nodes", fmt.Sprintf("go-ds-crdt, %.0f puts/s in all, Put on one peer to the put hook on each other", rate),
			stats(lat), fmt.Sprintf("%s within %s; its blocks come by bitswap from connected peers (no DHT here)", delivered(len(lat), due), sz.wait))
	}
	if sp == nil {
		return nil
	}
	var puts atomic.Int64
	took, counts, want, err := partition(sp, sz, func(i int) error {
		return peers[i].do(map[string]any{"op": "paced", "n": 1, "rate": 1000, "size": opSize,
			"prefix": fmt.Sprint("cut", puts.Add(1))}, nil)
	}, func(i int) (int, error) {
		var c struct{ N int }
		err := peers[i].do(map[string]any{"op": "count"}, &c)
		return c.N, err
	})
	if err != nil {
		return err
	}
	partitionRow(t, "crdt-partition", "go-ds-crdt, 20 peers cut in two halves that both put, then healed",
		"keys", sz, took, counts, want)
	return nil
}
