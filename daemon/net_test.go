package daemon

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/realmsync/realmsync/crdt"
)

// noPeriodicSync is a catch-up interval long enough that no test sees
// it: what arrives came by gossip, or by a pull that a gap or a new
// connection started.
const noPeriodicSync = time.Hour

// TestLine: five nodes in a line, each connected only to its neighbours;
// writes at either end reach the other end by gossip, relayed by the
// nodes between.
func TestLine(t *testing.T) {
	ctx := context.Background()
	nt := newNet(t)
	var nodes []*Node
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		nodes = append(nodes, nt.add(name, noPeriodicSync))
	}
	a, e := nodes[0], nodes[4]
	id := createRealm(t, a, "line")
	for _, n := range nodes[1:] {
		admit(t, a, n, id, crdt.RoleWriter)
	}
	for i := range len(nodes) - 1 {
		connect(t, nodes[i], nodes[i+1])
	}
	converge(t, id, nodes...)
	for i := range len(nodes) - 1 {
		nt.meshed(nodes[i], nodes[i+1], id)
	}

	if _, err := a.Write(ctx, id, message("from one end")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Write(ctx, id, message("from the other")); err != nil {
		t.Fatal(err)
	}
	converge(t, id, nodes...)
}

// TestRestartReconnects: a node that restarts dials the members it knew
// by itself, and what was written meanwhile reaches it.
func TestRestartReconnects(t *testing.T) {
	ctx := context.Background()
	a := newTestNode(t, "a")
	bdir := t.TempDir()
	cfg := Config{DataDir: bdir, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Name: "b",
		Logger: testLogger(t, "b"), SyncInterval: noPeriodicSync}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := createRealm(t, a, "restart")
	admit(t, a, b, id, crdt.RoleWriter)
	connect(t, b, a)
	converge(t, id, a, b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(ctx, id, message("while b was down")); err != nil {
		t.Fatal(err)
	}

	b, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	connected(t, b, a)
	converge(t, id, a, b)
	if _, err := a.Write(ctx, id, message("after b came back")); err != nil {
		t.Fatal(err)
	}
	converge(t, id, a, b)
}

// TestPartitionHeals: four nodes split in two halves that keep writing;
// once the links are back, all four converge with nothing lost or
// doubled.
func TestPartitionHeals(t *testing.T) {
	nt := newNet(t)
	a, b := nt.add("a", time.Second), nt.add("b", time.Second)
	c, d := nt.add("c", time.Second), nt.add("d", time.Second)
	all := []*Node{a, b, c, d}
	id := createRealm(t, a, "split")
	for _, n := range all[1:] {
		admit(t, a, n, id, crdt.RoleWriter)
	}
	for i, x := range all {
		for _, y := range all[i+1:] {
			connect(t, x, y)
		}
	}
	converge(t, id, all...)

	left, right := []*Node{a, b}, []*Node{c, d}
	nt.split(left, right)
	const perNode = 200
	for _, n := range all {
		writeMany(t, n, id, perNode, n.cfg.Name)
	}
	converge(t, id, a, b)
	converge(t, id, c, d)
	if digest(t, a, id) == digest(t, c, id) {
		t.Fatal("the halves agree while cut apart")
	}

	nt.heal(left, right)
	converge(t, id, all...)
	for _, n := range all {
		n.View(id, func(r *crdt.Realm) error {
			msgs, err := r.Messages("", 4*perNode+10)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 4*perNode {
				t.Errorf("%s holds %d messages, want %d", n.cfg.Name, len(msgs), 4*perNode)
			}
			return nil
		})
	}
}

// inTopic waits until a counts b among the peers of the realm's topic,
// that is, until a has accepted b's subscription.
func inTopic(t *testing.T, a, b *Node, id crdt.RealmID) {
	t.Helper()
	rp, err := a.replica(id)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for !slices.Contains(rp.topic.ListPeers(), b.ID()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never saw %s in the realm topic", a.cfg.Name, b.cfg.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLateGrantResubscribes: c, just admitted by a, connects to b before
// b has heard of the grant, so b refuses c's subscription. Once the grant
// reaches b, b takes c into the realm's topic after all, and b's writes
// reach c by gossip.
func TestLateGrantResubscribes(t *testing.T) {
	ctx := context.Background()
	nt := newNet(t)
	a, b, c := nt.add("a", noPeriodicSync), nt.add("b", noPeriodicSync), nt.add("c", noPeriodicSync)
	id := createRealm(t, a, "late")
	joined(t, a, b, id, crdt.RoleWriter)

	nt.split([]*Node{a}, []*Node{b})
	admit(t, a, c, id, crdt.RoleWriter)
	connect(t, c, a)
	connect(t, c, b)
	inTopic(t, c, b, id)
	if b.isMemberAnywhere(c.ID()) {
		t.Fatal("b knows of c's grant while cut off from a")
	}

	nt.heal([]*Node{a}, []*Node{b})
	connect(t, a, b)
	converge(t, id, a, b, c)
	inTopic(t, b, c, id)
	nt.split([]*Node{a}, []*Node{c})
	if _, err := b.Write(ctx, id, message("from b to c")); err != nil {
		t.Fatal(err)
	}
	converge(t, id, b, c)
}

// TestLANFinder: a node dials the realm members that mDNS finds on the
// local network, and leaves strangers alone.
func TestLANFinder(t *testing.T) {
	a, b, stranger := newTestNode(t, "a"), newTestNode(t, "b"), newTestNode(t, "stranger")
	id := createRealm(t, a, "lan")
	admit(t, a, b, id, crdt.RoleWriter)

	found := lanFinder{a}
	found.HandlePeerFound(peer.AddrInfo{ID: stranger.ID(), Addrs: stranger.host.Addrs()})
	found.HandlePeerFound(peer.AddrInfo{ID: b.ID(), Addrs: b.host.Addrs()})
	connected(t, a, b)
	converge(t, id, a, b)
	if got := a.host.Peerstore().Addrs(stranger.ID()); len(got) != 0 {
		t.Errorf("a noted the stranger's addresses %v", got)
	}
	if a.host.Network().Connectedness(stranger.ID()) == network.Connected {
		t.Error("a dialed a stranger found on the local network")
	}
}

// TestRejectLowersScore: a peer that is no member and sends ops into a
// realm's topic is rejected, and its gossip score falls below the
// threshold under which nothing it sends is heard.
func TestRejectLowersScore(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	scores := map[peer.ID]float64{}
	a, err := New(Config{
		DataDir: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Name: "a",
		Logger: testLogger(t, "a"),
		gossipOpts: []pubsub.Option{pubsub.WithPeerScoreInspect(func(s map[peer.ID]float64) {
			mu.Lock()
			defer mu.Unlock()
			maps.Copy(scores, s)
		}, 50*time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	id := createRealm(t, a, "scored")

	h, ps := outsider(t, false)
	if err := h.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(topicName(id))
	if err != nil {
		t.Fatal(err)
	}
	for !slices.Contains(topic.ListPeers(), a.ID()) {
		time.Sleep(10 * time.Millisecond)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	for i := range 5 {
		if err := topic.Publish(ctx, encodeGroup([]*crdt.Op{forged(t, id, priv, a.Author(), uint64(2+i))})); err != nil {
			t.Fatal(err)
		}
	}

	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		got := scores[h.ID()]
		mu.Unlock()
		if got < scoreThresholds().GraylistThreshold {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the outsider's score is %v, want below %v", got, scoreThresholds().GraylistThreshold)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var seq uint64
	a.View(id, func(r *crdt.Realm) error { seq, _ = r.Head(a.Author()); return nil })
	if seq != 1 {
		t.Errorf("a holds %d ops of its own chain, want 1", seq)
	}
}

// TestRemovedMemberCutOff: once a revokes b, b's connection is closed,
// and nothing written afterwards reaches b, though b keeps dialing.
func TestRemovedMemberCutOff(t *testing.T) {
	ctx := context.Background()
	nt := newNet(t)
	a, b, c := nt.add("a", time.Second), nt.add("b", time.Second), nt.add("c", time.Second)
	id := createRealm(t, a, "revoke")
	admit(t, a, b, id, crdt.RoleWriter)
	admit(t, a, c, id, crdt.RoleWriter)
	connect(t, a, b)
	connect(t, a, c)
	connect(t, b, c)
	converge(t, id, a, b, c)

	var bHead uint64
	b.View(id, func(r *crdt.Realm) error { bHead, _ = r.Head(b.Author()); return nil })
	revoke, err := a.Write(ctx, id, &crdt.Revoke{Member: b.Author(), LastSeq: bHead})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := a.Write(ctx, id, message(fmt.Sprint("after b left ", i))); err != nil {
			t.Fatal(err)
		}
	}
	converge(t, id, a, c)
	// b keeps dialing a and c and asking for catch-up (every second):
	// give it a few rounds.
	time.Sleep(3 * time.Second)
	b.View(id, func(r *crdt.Realm) error {
		if head, _ := r.Head(a.Author()); head > revoke.Seq {
			t.Errorf("b holds a's chain up to %d, past the revoke at %d", head, revoke.Seq)
		}
		return nil
	})
	for _, n := range []*Node{a, c} {
		rp, _ := n.replica(id)
		if slices.Contains(rp.topic.ListPeers(), b.ID()) {
			t.Errorf("%s still counts b in the realm's topic", n.cfg.Name)
		}
	}
}

// TestSyncGarbageCutOff: a peer that speaks the catch-up protocol badly is
// cut off, whether it asks (a frame too long, an ask that does not
// decode) or answers (a range that does not decode), and nothing it sent
// is kept.
func TestSyncGarbageCutOff(t *testing.T) {
	ctx := context.Background()
	a := newTestNode(t, "a")
	id := createRealm(t, a, "guarded")
	before := digest(t, a, id)

	asks := map[string][]byte{
		"frame too long": {0xff, 0xff, 0xff, 0xff, frameAsk},
		"ask of garbage": {0, 0, 0, 4, frameAsk, 9, 9, 9},
		"not an ask":     {0, 0, 0, 1, frameRange},
	}
	for name, junk := range asks {
		t.Run("asker/"+name, func(t *testing.T) {
			h, _ := outsider(t, false)
			if err := h.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.host.Addrs()}); err != nil {
				t.Fatal(err)
			}
			s, err := h.NewStream(ctx, a.ID(), syncProtocol)
			if err != nil {
				t.Fatal(err)
			}
			s.Write(junk)
			s.CloseWrite()
			waitDisconnected(t, h, a.ID())
		})
	}

	t.Run("answerer", func(t *testing.T) {
		// A member whose node answers every ask with a range that does
		// not decode.
		h, _ := outsider(t, false)
		author, ok := authorOf(h.ID())
		if !ok {
			t.Fatal("the outsider's key is not ed25519")
		}
		if _, err := a.Write(ctx, id, &crdt.Grant{Member: author, Role: crdt.RoleWriter, FromSeq: 1}); err != nil {
			t.Fatal(err)
		}
		before = digest(t, a, id)
		h.SetStreamHandler(syncProtocol, func(s network.Stream) {
			defer s.Close()
			w := bufio.NewWriter(s)
			bad := append(id[:], 0, 1, 0, 0, 0, 3, 1, 2, 3)
			writeFrame(w, frameRange, bad)
			w.Flush()
		})
		if err := h.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.host.Addrs()}); err != nil {
			t.Fatal(err)
		}
		waitDisconnected(t, h, a.ID())
	})
	if digest(t, a, id) != before {
		t.Error("something a bad peer sent was kept")
	}
}

// waitDisconnected waits until h has no connection to id.
func waitDisconnected(t *testing.T, h host.Host, id peer.ID) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for h.Network().Connectedness(id) == network.Connected {
		if time.Now().After(deadline) {
			t.Fatal("the bad peer is still connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
