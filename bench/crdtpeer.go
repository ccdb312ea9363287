package main

import (
	"context"
	"encoding/binary"
	"fmt"
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

// crdtPeer is the main of a go-ds-crdt peer process (see serve).
func crdtPeer(dir string) error {
	ctx := context.Background()
	h, err := libp2p.New(libp2p.ListenAddrStrings(listenAddr()))
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

	put := func(cmd command, i int, timed bool) error {
		v := make([]byte, max(cmd.Size, 16))
		binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
		if timed {
			v[8] = 'R'
		}
		return store2.Put(ctx, ds.NewKey(fmt.Sprintf("/%s/%d", cmd.Prefix, i)), v)
	}
	return serve(hostAddr(h), func(cmd command) (any, error) {
		switch cmd.Op {
		case "connect":
			return nil, join(ctx, h, cmd.Addr, func() int { return len(ps.ListPeers("bench-crdt")) })
		case "paced": // n timed puts at rate per second
			return nil, paced(cmd.N, cmd.Rate, func(i int) error { return put(cmd, i, true) })
		case "burst": // n puts from concurrent writers, each timed
			took, elapsed, err := concurrently(cmd.N, cmd.Writers, func(i int) error { return put(cmd, i, false) })
			if err != nil {
				return nil, err
			}
			ms := make([]float64, len(took))
			for i, d := range took {
				ms[i] = float64(d) / 1e6
			}
			return map[string]any{"lat": ms, "elapsed": elapsed.Seconds()}, nil
		case "count": // how many keys the store holds
			res, err := store2.Query(ctx, query.Query{KeysOnly: true})
			if err != nil {
				return nil, err
			}
			defer res.Close()
			n := 0
			for r := range res.Next() {
				if r.Error != nil {
					return nil, r.Error
				}
				n++
			}
			return map[string]any{"n": n}, nil
		case "report":
			time.Sleep(time.Second) // stragglers
			mu.Lock()
			defer mu.Unlock()
			answer := map[string]any{"lat": lat}
			lat = nil
			return answer, nil
		}
		return nil, fmt.Errorf("unknown command %q", cmd.Op)
	})
}
