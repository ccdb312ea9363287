package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	crdt "github.com/ipfs/go-ds-crdt"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

// go-ds-crdt, the Merkle-CRDT key-value store, set up as its users set it
// up for peers that really talk: a libp2p host on loopback TCP, gossipsub
// for its broadcasts, bitswap over the host to fetch the DAG's blocks,
// and the same pebble datastore realmsync uses, with synced writes so
// that a Put is as durable as a realmsync write when it returns.

// crdtPeer is the main of a go-ds-crdt peer process, driven like a
// gossip peer: commands on stdin, answers on stdout, one JSON object a
// line.
func crdtPeer(dir string) error {
	ctx := context.Background()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		return err
	}
	defer h.Close()
	ps, err := pubsub.NewGossipSub(ctx, h)
	if err != nil {
		return err
	}
	store, err := pebbleds.NewDatastore(dir, pebbleds.WithPebbleWriteOptions(pebble.Sync))
	if err != nil {
		return err
	}
	defer store.Close()
	bstore := blockstore.NewBlockstore(store)
	bswap := bitswap.New(ctx, bsnet.NewFromIpfsHost(h), nil, bstore)
	dags := merkledag.NewDAGService(blockservice.New(bstore, bswap))
	bcast, err := crdt.NewPubSubBroadcaster(ctx, ps, "bench-crdt")
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var lat []float64 // ms, of keys put elsewhere
	opts := crdt.DefaultOptions()
	opts.RebroadcastInterval = time.Second
	opts.PutHook = func(_ ds.Key, v []byte) {
		if len(v) < 9 || v[8] != 'R' {
			return // written here, or not timed
		}
		mu.Lock()
		lat = append(lat, float64(time.Now().UnixNano()-int64(binary.BigEndian.Uint64(v)))/1e6)
		mu.Unlock()
	}
	store2, err := crdt.New(store, ds.NewKey("crdt"), dags, bcast, opts)
	if err != nil {
		return err
	}
	defer store2.Close()

	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"addr": fmt.Sprintf("%s/p2p/%s", h.Addrs()[0], h.ID())})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var cmd struct {
			Op      string
			Addr    string
			N       int
			Rate    float64
			Writers int
			Size    int
			Prefix  string
		}
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			return err
		}
		put := func(i int, timed bool) error {
			v := make([]byte, max(cmd.Size, 16))
			binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
			if timed {
				v[8] = 'R'
			}
			return store2.Put(ctx, ds.NewKey(fmt.Sprintf("/%s/%d", cmd.Prefix, i)), v)
		}
		switch cmd.Op {
		case "connect":
			if err := dial(ctx, h, cmd.Addr); err != nil {
				return err
			}
			for len(ps.ListPeers("bench-crdt")) == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(1500 * time.Millisecond) // a heartbeat: the mesh forms
			out.Encode(map[string]any{})
		case "paced": // n timed puts at rate per second
			every := time.Duration(float64(time.Second) / cmd.Rate)
			next := time.Now()
			for i := range cmd.N {
				time.Sleep(time.Until(next))
				next = next.Add(every)
				if err := put(i, true); err != nil {
					return err
				}
			}
			out.Encode(map[string]any{})
		case "burst": // n puts from concurrent writers, each timed
			var wg sync.WaitGroup
			var lmu sync.Mutex
			var took []float64
			jobs := make(chan int, cmd.N)
			for i := range cmd.N {
				jobs <- i
			}
			close(jobs)
			start := time.Now()
			var perr error
			for range max(cmd.Writers, 1) {
				wg.Go(func() {
					for i := range jobs {
						t0 := time.Now()
						err := put(i, false)
						lmu.Lock()
						took = append(took, float64(time.Since(t0))/1e6)
						if err != nil && perr == nil {
							perr = err
						}
						lmu.Unlock()
					}
				})
			}
			wg.Wait()
			if perr != nil {
				return perr
			}
			out.Encode(map[string]any{"lat": took, "elapsed": time.Since(start).Seconds()})
		case "count": // how many keys the store holds
			res, err := store2.Query(ctx, query.Query{KeysOnly: true})
			if err != nil {
				return err
			}
			n := 0
			for r := range res.Next() {
				if r.Error != nil {
					return r.Error
				}
				n++
			}
			res.Close()
			out.Encode(map[string]any{"n": n})
		case "report":
			time.Sleep(time.Second) // stragglers
			mu.Lock()
			out.Encode(map[string]any{"lat": lat})
			lat = nil
			mu.Unlock()
		}
	}
	return sc.Err()
}
