package daemon

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/realmsync/realmsync/crdt"
)

// waitFor is how long a test waits for gossip to arrive on loopback.
const waitFor = 20 * time.Second

func newTestNode(t testing.TB, name string) *Node {
	t.Helper()
	n, err := New(Config{
		DataDir: t.TempDir(),
		Listen:  []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"},
		Name:    name,
		Logger:  testLogger(t, name),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// testLogger logs to the test's output at debug level when the test
// runs with -v, and nowhere otherwise.
func testLogger(t testing.TB, name string) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	h := slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h).With("node", name)
}

func connect(t testing.TB, a, b *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

// createRealm creates a realm on n.
func createRealm(t testing.TB, n *Node, name string) crdt.RealmID {
	t.Helper()
	id, err := n.CreateRealm(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// admit makes b a member of a's realm, as the acceptance handshake will:
// a grants b a role, and b starts holding the realm, which catch-up with
// a member then fills.
func admit(t testing.TB, a, b *Node, id crdt.RealmID, role crdt.Role) {
	t.Helper()
	ctx := context.Background()
	if _, err := a.Write(ctx, id, &crdt.Grant{Member: b.Author(), Role: role, FromSeq: 1, Name: b.cfg.Name}); err != nil {
		t.Fatal(err)
	}
	rp, err := a.replica(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.JoinRealm(id, rp.ring.all()); err != nil {
		t.Fatal(err)
	}
}

// joined admits b to a's realm, connects them and waits until b holds
// what a holds.
func joined(t *testing.T, a, b *Node, id crdt.RealmID, role crdt.Role) {
	t.Helper()
	admit(t, a, b, id, role)
	connect(t, a, b)
	converge(t, id, a, b)
}

func digest(t testing.TB, n *Node, id crdt.RealmID) crdt.Hash {
	t.Helper()
	var d crdt.Hash
	if err := n.View(id, func(r *crdt.Realm) error { d = r.Digest(); return nil }); err != nil {
		t.Fatal(err)
	}
	return d
}

// converge waits until every node shows the same digest of the realm.
func converge(t testing.TB, id crdt.RealmID, nodes ...*Node) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		var changes []<-chan struct{}
		same := true
		for _, n := range nodes {
			ch, err := n.Changed(id)
			if err != nil {
				t.Fatal(err)
			}
			changes = append(changes, ch)
			same = same && digest(t, n, id) == digest(t, nodes[0], id)
		}
		if same {
			return
		}
		select {
		case <-changes[0]:
		case <-changes[len(changes)-1]:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			var state []string
			for _, n := range nodes {
				n.View(id, func(r *crdt.Realm) error {
					state = append(state, fmt.Sprintf("%s: %d members, heads %v", n.cfg.Name, len(r.Members()), heads(r)))
					return nil
				})
			}
			t.Fatalf("realm did not converge within %v: %v", waitFor, state)
		}
	}
}

// meshed waits until a counts b among the peers of the realm's topic.
func meshed(t testing.TB, a, b *Node, id crdt.RealmID) {
	t.Helper()
	rp, err := a.replica(id)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		for _, p := range rp.topic.ListPeers() {
			if p == b.ID() {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never saw %s in the realm topic", a.cfg.Name, b.cfg.Name)
}

func message(text string) *crdt.Set {
	return &crdt.Set{Collection: crdt.MessagesCollection, ID: text,
		Fields: []crdt.Field{{Name: "text", Value: []byte(`"` + text + `"`)}}}
}

// TestTwoNodes: a write on one node is visible on the other, and both
// writing at once converge to one digest.
func TestTwoNodes(t *testing.T) {
	a, b := newTestNode(t, "a"), newTestNode(t, "b")
	ctx := context.Background()
	id := createRealm(t, a, "chat")
	admit(t, a, b, id, crdt.RoleWriter)
	connect(t, a, b)
	meshed(t, a, b, id)
	meshed(t, b, a, id)

	if _, err := a.Write(ctx, id, message("hello from a")); err != nil {
		t.Fatal(err)
	}
	converge(t, id, a, b)
	err := b.View(id, func(r *crdt.Realm) error {
		_, err := r.Object(crdt.ObjectKey{Collection: crdt.MessagesCollection, ID: "hello from a"})
		return err
	})
	if err != nil {
		t.Fatalf("b does not show a's message: %v", err)
	}

	done := make(chan error, 2)
	for _, n := range []*Node{a, b} {
		go func() {
			for i := range 50 {
				if _, err := n.Write(ctx, id, message(fmt.Sprintf("%s %d", n.cfg.Name, i))); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	converge(t, id, a, b)
}

func heads(r *crdt.Realm) map[string]uint64 {
	out := map[string]uint64{}
	for a, s := range r.VersionVector() {
		out[a.Short()] = s
	}
	return out
}

// outsider is a plain libp2p host with a pubsub router of its own: what a
// node that merely knows a realm's id can do.
func outsider(t testing.TB, flood bool) (host.Host, *pubsub.PubSub) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	opts := []pubsub.Option{pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(), pubsub.WithMessageIdFn(opID)}
	var ps *pubsub.PubSub
	if flood {
		ps, err = pubsub.NewFloodSub(ctx, h, opts...)
	} else {
		ps, err = pubsub.NewGossipSub(ctx, h, opts...)
	}
	if err != nil {
		t.Fatal(err)
	}
	return h, ps
}

// TestNonMemberGetsNothing: a peer that is not a member connects to a
// member and subscribes to the realm's topic, as a gossipsub and as a
// floodsub-only peer. It receives none of the ops the members write, and
// none of the ops it forges is applied.
func TestNonMemberGetsNothing(t *testing.T) {
	for _, flood := range []bool{false, true} {
		t.Run(fmt.Sprintf("floodsub=%v", flood), func(t *testing.T) {
			a, b := newTestNode(t, "a"), newTestNode(t, "b")
			ctx := context.Background()
			id, err := a.CreateRealm(ctx, "private")
			if err != nil {
				t.Fatal(err)
			}
			admit(t, a, b, id, crdt.RoleWriter)
			connect(t, a, b)
			meshed(t, a, b, id)

			h, ps := outsider(t, flood)
			if err := h.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.host.Addrs()}); err != nil {
				t.Fatal(err)
			}
			topic, err := ps.Join(topicName(id))
			if err != nil {
				t.Fatal(err)
			}
			sub, err := topic.Subscribe()
			if err != nil {
				t.Fatal(err)
			}
			// Once the outsider sees a in the topic, a has had its
			// subscription (and dropped it).
			for !slices.Contains(topic.ListPeers(), a.ID()) {
				time.Sleep(10 * time.Millisecond)
			}

			// The outsider forges ops: its own, and one in a's name.
			_, priv, _ := ed25519.GenerateKey(nil)
			var mine crdt.PublicKey
			copy(mine[:], priv.Public().(ed25519.PublicKey))
			own := forged(t, id, priv, mine, 1)
			inA := forged(t, id, priv, a.Author(), 3)
			for _, op := range []*crdt.Op{own, inA} {
				if err := topic.Publish(ctx, encodeGroup([]*crdt.Op{op})); err != nil {
					t.Fatal(err)
				}
			}

			for i := range 10 {
				if _, err := a.Write(ctx, id, message(fmt.Sprint("secret ", i))); err != nil {
					t.Fatal(err)
				}
			}
			converge(t, id, a, b)
			wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			for {
				m, err := sub.Next(wctx)
				if err != nil {
					break
				}
				if m.ReceivedFrom != h.ID() { // its own ops come back to it
					t.Fatalf("the outsider received %d bytes from %s", len(m.Data), m.ReceivedFrom)
				}
			}
			for _, n := range []*Node{a, b} {
				n.View(id, func(r *crdt.Realm) error {
					if seq, _ := r.Head(mine); seq != 0 {
						t.Errorf("%s applied %d forged ops", n.cfg.Name, seq)
					}
					if seq, _ := r.Head(a.Author()); seq != 12 {
						t.Errorf("%s holds %d ops of a, want 12", n.cfg.Name, seq)
					}
					return nil
				})
			}
		})
	}
}

// forged signs with priv an op at seq of author's chain; when priv is not
// author's key, the signature is simply wrong.
func forged(t *testing.T, id crdt.RealmID, priv ed25519.PrivateKey, author crdt.PublicKey, seq uint64) *crdt.Op {
	t.Helper()
	op := &crdt.Op{Realm: id, Author: author, Seq: seq,
		Clock: crdt.MakeTimestamp(time.Now().UnixMilli(), 0), Body: message("forged")}
	if seq > 1 {
		op.Prev = crdt.Hash{1}
	}
	if err := op.Sign(priv); err != nil {
		t.Fatal(err)
	}
	return op
}

// writeMany writes n messages to the realm from 8 writers at once.
func writeMany(t *testing.T, nd *Node, id crdt.RealmID, n int, prefix string) {
	t.Helper()
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			for i := w; i < n; i += 8 {
				if _, err := nd.Write(context.Background(), id, message(fmt.Sprintf("%s %d", prefix, i))); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestCatchUpAfterOffline: a node that was offline while 10,000 ops were
// written comes back, and catch-up brings it to the same digest.
func TestCatchUpAfterOffline(t *testing.T) {
	a := newTestNode(t, "a")
	bdir := t.TempDir()
	b, err := New(Config{DataDir: bdir, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Name: "b",
		Logger: testLogger(t, "b")})
	if err != nil {
		t.Fatal(err)
	}
	id := createRealm(t, a, "offline")
	joined(t, a, b, id, crdt.RoleWriter)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	writeMany(t, a, id, 10_000, "while b was away")

	b, err = New(Config{DataDir: bdir, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Name: "b",
		Logger: testLogger(t, "b")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	connect(t, b, a)
	converge(t, id, a, b)
}

// TestDataDirLocked: a second node on a data dir in use is refused with
// ErrLocked, and the first goes on unharmed.
func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Config{DataDir: dir, Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if b, err := New(Config{DataDir: dir, Listen: []string{"/ip4/127.0.0.1/tcp/0"}}); !errors.Is(err, ErrLocked) {
		if b != nil {
			b.Close()
		}
		t.Fatalf("second node on the same dir: %v, want ErrLocked", err)
	}
	if _, err := a.CreateRealm(context.Background(), "still here"); err != nil {
		t.Errorf("first node after the refusal: %v", err)
	}
}
