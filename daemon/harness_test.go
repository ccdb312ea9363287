package daemon

import (
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/realmsync/realmsync/crdt"
)

// meshTracer records which peers a node's gossip router holds in the
// mesh of each topic.
type meshTracer struct {
	mu   sync.Mutex
	mesh map[string]map[peer.ID]bool
}

func newMeshTracer() *meshTracer { return &meshTracer{mesh: make(map[string]map[peer.ID]bool)} }

func (m *meshTracer) Graft(p peer.ID, topic string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mesh[topic] == nil {
		m.mesh[topic] = make(map[peer.ID]bool)
	}
	m.mesh[topic][p] = true
}

func (m *meshTracer) Prune(p peer.ID, topic string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.mesh[topic], p)
}

func (m *meshTracer) has(topic string, p peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mesh[topic][p]
}

func (*meshTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (*meshTracer) OnClosedOutboundStream(peer.ID)                       {}
func (*meshTracer) Join(string)                                          {}
func (*meshTracer) Leave(string)                                         {}
func (*meshTracer) ValidateMessage(*pubsub.Message)                      {}
func (*meshTracer) DeliverMessage(*pubsub.Message)                       {}
func (*meshTracer) RejectMessage(*pubsub.Message, string)                {}
func (*meshTracer) DuplicateMessage(*pubsub.Message)                     {}
func (*meshTracer) ThrottlePeer(peer.ID)                                 {}
func (*meshTracer) RecvRPC(*pubsub.RPC)                                  {}
func (*meshTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (*meshTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (*meshTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (*meshTracer) UndeliverableMessage(*pubsub.Message)                 {}

// partition is a connection gater that cuts chosen pairs of peers apart.
type partition struct {
	mu  sync.Mutex
	cut map[[2]peer.ID]bool
	me  peer.ID
}

func (g *partition) blocked(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cut[[2]peer.ID{g.me, p}]
}

func (g *partition) InterceptPeerDial(p peer.ID) bool                 { return !g.blocked(p) }
func (g *partition) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return !g.blocked(p) }
func (g *partition) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *partition) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.blocked(p)
}
func (g *partition) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// net is a set of test nodes whose links can be cut and restored.
type net struct {
	t      *testing.T
	mu     sync.Mutex
	cut    map[[2]peer.ID]bool
	gaters []*partition
	nodes  []*Node
	traces map[*Node]*meshTracer
}

func newNet(t *testing.T) *net {
	return &net{t: t, cut: make(map[[2]peer.ID]bool), traces: make(map[*Node]*meshTracer)}
}

// add starts a node on the net; syncEvery sets its catch-up interval.
func (nt *net) add(name string, syncEvery time.Duration) *Node {
	t := nt.t
	t.Helper()
	g := &partition{cut: nt.cut}
	tr := newMeshTracer()
	n, err := New(Config{
		DataDir:      t.TempDir(),
		Listen:       []string{"/ip4/127.0.0.1/tcp/0"},
		Name:         name,
		Logger:       testLogger(t, name),
		SyncInterval: syncEvery,
		gossipOpts:   []pubsub.Option{pubsub.WithRawTracer(tr)},
		gater:        g,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	g.mu.Lock()
	g.me = n.ID()
	g.mu.Unlock()
	// Every gater shares nt.cut, under its own lock: guard with nt.mu too.
	nt.mu.Lock()
	nt.gaters = append(nt.gaters, g)
	nt.nodes = append(nt.nodes, n)
	nt.traces[n] = tr
	nt.mu.Unlock()
	return n
}

// split cuts every link between the two groups and closes the
// connections across.
func (nt *net) split(left, right []*Node) {
	nt.setCut(left, right, true)
	for _, a := range left {
		for _, b := range right {
			a.host.Network().ClosePeer(b.ID())
			b.host.Network().ClosePeer(a.ID())
		}
	}
}

// heal restores the links between the two groups.
func (nt *net) heal(left, right []*Node) { nt.setCut(left, right, false) }

func (nt *net) setCut(left, right []*Node, cut bool) {
	for _, g := range nt.gaters {
		g.mu.Lock()
	}
	for _, a := range left {
		for _, b := range right {
			nt.cut[[2]peer.ID{a.ID(), b.ID()}] = cut
			nt.cut[[2]peer.ID{b.ID(), a.ID()}] = cut
		}
	}
	for _, g := range nt.gaters {
		g.mu.Unlock()
	}
}

// meshed waits until a and b hold each other in the realm's gossip mesh.
func (nt *net) meshed(a, b *Node, id crdt.RealmID) {
	t := nt.t
	t.Helper()
	topic := topicName(id)
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		if nt.traces[a].has(topic, b.ID()) && nt.traces[b].has(topic, a.ID()) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s and %s never meshed in the realm topic", a.cfg.Name, b.cfg.Name)
}

// connected waits until a has a connection to b.
func connected(t *testing.T, a, b *Node) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for a.host.Network().Connectedness(b.ID()) != network.Connected {
		if time.Now().After(deadline) {
			t.Fatalf("%s never connected to %s", a.cfg.Name, b.cfg.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
