package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
)

// Raw gossipsub: two processes, one libp2p host each on loopback TCP,
// gossipsub configured as realmsync configures it (no pubsub signing, the
// message id a hash of the data, deep queues), publishing payloads of a
// realmsync op's size. Nothing checks, stores or syncs them: this is the
// floor that realmsync's live path adds its work to.

const gossipTopic = "bench"

// gossipPeer is the main of a gossip peer process (see serve).
func gossipPeer() error {
	ctx := context.Background()
	h, err := libp2p.New(libp2p.ListenAddrStrings(listenAddr()))
	if err != nil {
		return err
	}
	defer h.Close()
	ps, err := pubsub.NewGossipSub(ctx, h,
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(func(m *pb.Message) string {
			sum := sha256.Sum256(m.Data)
			return string(sum[:])
		}),
		pubsub.WithPeerOutboundQueueSize(4096),
		pubsub.WithValidateQueueSize(4096))
	if err != nil {
		return err
	}
	topic, err := ps.Join(gossipTopic)
	if err != nil {
		return err
	}
	sub, err := topic.Subscribe(pubsub.WithBufferSize(4096))
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var lat []float64 // ms
	go func() {
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				return
			}
			if m.ReceivedFrom == h.ID() || len(m.Data) < 8 {
				continue
			}
			sent := int64(binary.BigEndian.Uint64(m.Data))
			mu.Lock()
			lat = append(lat, float64(time.Now().UnixNano()-sent)/1e6)
			mu.Unlock()
		}
	}()
	return serve(hostAddr(h), func(cmd command) (any, error) {
		switch cmd.Op {
		case "connect":
			return nil, join(ctx, h, cmd.Addr, func() int { return len(topic.ListPeers()) })
		case "send":
			return nil, paced(cmd.N, cmd.Rate, func(i int) error {
				data := make([]byte, cmd.Size)
				binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
				binary.BigEndian.PutUint64(data[8:], uint64(i))
				return topic.Publish(ctx, data)
			})
		case "report":
			time.Sleep(time.Second) // stragglers
			mu.Lock()
			defer mu.Unlock()
			return map[string]any{"lat": lat}, nil
		}
		return nil, fmt.Errorf("unknown command %q", cmd.Op)
	})
}

// rawGossip publishes n payloads of size bytes at rate per second from
// one peer to the other, and returns the latencies the receiver saw and
// the bytes on the wire per payload.
func rawGossip(n int, rate float64, size int) ([]time.Duration, string, error) {
	a, err := startGossipPeer()
	if err != nil {
		return nil, "", err
	}
	defer a.stop()
	b, err := startGossipPeer()
	if err != nil {
		return nil, "", err
	}
	defer b.stop()
	if err := b.do(map[string]any{"op": "connect", "addr": a.addr}, nil); err != nil {
		return nil, "", err
	}
	meter := meterPort(addrPort(a.addr))
	if err := a.do(map[string]any{"op": "send", "n": n, "rate": rate, "size": max(size, 16)}, nil); err != nil {
		return nil, "", err
	}
	var rep struct{ Lat []float64 }
	if err := b.do(map[string]any{"op": "report"}, &rep); err != nil {
		return nil, "", err
	}
	wire, _ := meter.perOp(n)
	lat := durations(rep.Lat)
	if len(lat) < n {
		return lat, wire, fmt.Errorf("raw gossipsub delivered %d of %d", len(lat), n)
	}
	return lat, wire, nil
}
