package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// Raw gossipsub: two processes, one libp2p host each on loopback TCP,
// gossipsub configured as realmsync configures it (no pubsub signing, the
// message id a hash of the data, deep queues), publishing payloads of a
// realmsync op's size. Nothing checks, stores or syncs them: this is the
// floor that realmsync's live path adds its work to.

const gossipTopic = "bench"

// gossipPeer is the main of a peer process: it prints its address, then
// takes commands on stdin, one JSON object a line, and answers each on
// stdout.
func gossipPeer() error {
	ctx := context.Background()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
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
			lat = append(lat, float64(time.Now().UnixNano()-sent)/1e6)
		}
	}()
	out := json.NewEncoder(os.Stdout)
	addr := fmt.Sprintf("%s/p2p/%s", h.Addrs()[0], h.ID())
	out.Encode(map[string]any{"addr": addr})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var cmd struct {
			Op   string
			Addr string
			N    int
			Rate float64
			Size int
		}
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			return err
		}
		switch cmd.Op {
		case "connect":
			if err := dial(ctx, h, cmd.Addr); err != nil {
				return err
			}
			for len(topic.ListPeers()) == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(1500 * time.Millisecond) // a heartbeat: the mesh forms
			out.Encode(map[string]any{})
		case "send":
			every := time.Duration(float64(time.Second) / cmd.Rate)
			next := time.Now()
			for i := range cmd.N {
				time.Sleep(time.Until(next))
				next = next.Add(every)
				data := make([]byte, cmd.Size)
				binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
				binary.BigEndian.PutUint64(data[8:], uint64(i))
				if err := topic.Publish(ctx, data); err != nil {
					return err
				}
			}
			out.Encode(map[string]any{})
		case "report":
			time.Sleep(time.Second) // stragglers
			out.Encode(map[string]any{"lat": lat})
		}
	}
	return sc.Err()
}

// dial connects h to the peer at addr, a multiaddr ending in /p2p/<id>.
func dial(ctx context.Context, h host.Host, addr string) error {
	ma, err := multiaddr.NewMultiaddr(addr)
	if err != nil {
		return err
	}
	info, err := peer.AddrInfoFromP2pAddr(ma)
	if err != nil {
		return err
	}
	return h.Connect(ctx, *info)
}

// peerProc is a peer process: a gossip peer or a go-ds-crdt peer.
type peerProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *json.Decoder
	addr string
	dir  string // its data dir, if it has one
}

func startGossipPeer() (*peerProc, error) { return startPeer("gossip-peer") }

// startPeer runs this program again as a peer process: args name its mode.
func startPeer(args ...string) (*peerProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &peerProc{cmd: cmd, in: in, out: json.NewDecoder(stdout)}
	var hello struct{ Addr string }
	if err := p.out.Decode(&hello); err != nil {
		p.stop()
		return nil, fmt.Errorf("gossip peer: %w", err)
	}
	p.addr = hello.Addr
	return p, nil
}

func (p *peerProc) do(cmd map[string]any, answer any) error {
	raw, _ := json.Marshal(cmd)
	if _, err := fmt.Fprintf(p.in, "%s\n", raw); err != nil {
		return err
	}
	if answer == nil {
		answer = &struct{}{}
	}
	return p.out.Decode(answer)
}

func (p *peerProc) stop() {
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// rawGossip publishes n payloads of size bytes at rate per second from
// one peer to the other, and returns the latencies the receiver saw.
func rawGossip(n int, rate float64, size int) ([]time.Duration, error) {
	a, err := startGossipPeer()
	if err != nil {
		return nil, err
	}
	defer a.stop()
	b, err := startGossipPeer()
	if err != nil {
		return nil, err
	}
	defer b.stop()
	if err := b.do(map[string]any{"op": "connect", "addr": a.addr}, nil); err != nil {
		return nil, err
	}
	if err := a.do(map[string]any{"op": "send", "n": n, "rate": rate, "size": max(size, 16)}, nil); err != nil {
		return nil, err
	}
	var rep struct{ Lat []float64 }
	if err := b.do(map[string]any{"op": "report"}, &rep); err != nil {
		return nil, err
	}
	lat := make([]time.Duration, len(rep.Lat))
	for i, ms := range rep.Lat {
		lat[i] = time.Duration(ms * float64(time.Millisecond))
	}
	if len(lat) < n {
		return lat, fmt.Errorf("raw gossipsub delivered %d of %d", len(lat), n)
	}
	return lat, nil
}
