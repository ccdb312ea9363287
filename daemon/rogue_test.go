package daemon

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/realmsync/realmsync/crdt"
	"github.com/realmsync/realmsync/invite"
)

// rogue is a member whose node is written to misbehave: a bare libp2p
// host with gossipsub, holding a writer's key of the realm.
type rogue struct {
	t     testing.TB
	h     host.Host
	topic *pubsub.Topic
	priv  ed25519.PrivateKey
	key   crdt.PublicKey
	id    crdt.RealmID
	seq   uint64
	prev  crdt.Hash
}

// rogueScene sets up an honest admin a and an honest writer b, whose
// applied ops of a's chain are timed by arrived, and a rogue writer
// connected to both and subscribed to the realm's topic.
func rogueScene(tb testing.TB, arrived func(*crdt.Op)) (a, b *Node, id crdt.RealmID, r *rogue) {
	ctx := context.Background()
	a = newTestNode(tb, "a")
	b, err := New(Config{
		DataDir: tb.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Name: "b",
		onApplied: func(ops []*crdt.Op, _ bool) {
			for _, op := range ops {
				if op.Author == a.Author() && arrived != nil {
					arrived(op)
				}
			}
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	id = createRealm(tb, a, "rogue")
	admit(tb, a, b, id, crdt.RoleWriter)

	h, ps := outsider(tb, false)
	r = &rogue{t: tb, h: h, id: id}
	raw, err := h.Peerstore().PrivKey(h.ID()).Raw()
	if err != nil {
		tb.Fatal(err)
	}
	r.priv = ed25519.PrivateKey(raw)
	copy(r.key[:], r.priv.Public().(ed25519.PublicKey))
	if _, err := a.Write(ctx, id, &crdt.Grant{Member: r.key, Role: crdt.RoleWriter, FromSeq: 1, Name: "rogue"}); err != nil {
		tb.Fatal(err)
	}
	connect(tb, a, b)
	converge(tb, id, a, b)
	meshed(tb, a, b, id)
	for _, n := range []*Node{a, b} {
		if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.host.Addrs()}); err != nil {
			tb.Fatal(err)
		}
	}
	if r.topic, err = ps.Join(topicName(id)); err != nil {
		tb.Fatal(err)
	}
	if _, err := r.topic.Subscribe(); err != nil {
		tb.Fatal(err)
	}
	for len(r.topic.ListPeers()) < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	return a, b, id, r
}

// op makes the next op of the rogue's chain, signed with its key.
func (r *rogue) op(text string) *crdt.Op {
	op := &crdt.Op{Realm: r.id, Author: r.key, Seq: r.seq + 1, Prev: r.prev,
		Clock: crdt.MakeTimestamp(time.Now().UnixMilli(), 0), Body: message(text)}
	if err := op.Sign(r.priv); err != nil {
		r.t.Fatal(err)
	}
	return op
}

func (r *rogue) publish(data []byte) {
	r.topic.Publish(context.Background(), data) // refused locally, at times: no matter
}

// junk makes count messages that a member's node must not let in: ops
// with bad signatures, groups cut short, bytes that are no group,
// messages over the size limit, replays of the honest ops given, and ops
// at positions of its chain it has already used. They are made before the
// flood, so that the flood spends the test's CPU on sending them only.
func (r *rogue) junk(count int, replays []*crdt.Op) [][]byte {
	_, stranger, _ := ed25519.GenerateKey(nil)
	var out [][]byte
	for i := range count {
		switch i % 6 {
		case 0: // a bad signature
			op := &crdt.Op{Realm: r.id, Author: r.key, Seq: r.seq + 1, Prev: r.prev,
				Clock: crdt.MakeTimestamp(time.Now().UnixMilli(), uint16(i)), Body: message(fmt.Sprint("forged ", i))}
			op.Sign(stranger)
			out = append(out, encodeGroup([]*crdt.Op{op}))
		case 1: // another op at a position already used
			out = append(out, encodeGroup([]*crdt.Op{r.op(fmt.Sprint("again ", i))}))
		case 2: // garbage
			out = append(out, []byte(fmt.Sprint("no group at all ", i)))
		case 3: // over the size limit
			out = append(out, make([]byte, maxGossipRPC+1))
		case 4: // a replay of an honest op
			if len(replays) > 0 {
				out = append(out, encodeGroup([]*crdt.Op{replays[i%len(replays)]}))
			}
		case 5: // a group cut short
			g := encodeGroup([]*crdt.Op{r.op(fmt.Sprint("cut ", i))})
			out = append(out, g[:len(g)-7])
		}
	}
	return out
}

// flood publishes junk, round and round, as fast as it can until stop
// closes, and returns how many messages it sent.
func (r *rogue) flood(stop <-chan struct{}, junk [][]byte) int {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return i
		default:
		}
		r.publish(junk[i%len(junk)])
	}
}

// stall opens streams of the catch-up and acceptance protocols to n and
// sends nothing on half of them and garbage on the rest; it returns a
// function that closes them.
func (r *rogue) stall(n *Node, count int) func() {
	var streams []network.Stream
	for i := range count {
		proto := []string{string(syncProtocol), invite.AcceptProtocol}[i%2]
		s, err := r.h.NewStream(context.Background(), n.ID(), protocol.ID(proto))
		if err != nil {
			continue // refused: the resource manager's limit, say
		}
		if i%4 >= 2 && proto == invite.AcceptProtocol {
			s.Write([]byte("this is not an acceptance request"))
		}
		streams = append(streams, s)
	}
	return func() {
		for _, s := range streams {
			s.Reset()
		}
	}
}

// TestRogueMember: a member whose node misbehaves in every way the wire
// allows, while an honest admin writes: it equivocates, then floods the
// topic with forged, cut short, garbage, oversized and replayed messages,
// and holds catch-up and acceptance streams open, stalled or full of
// garbage. Every message the admin writes meanwhile reaches the honest
// writer, nothing the rogue sent after its first op is applied anywhere,
// and both honest nodes hold the evidence that froze its chain.
func TestRogueMember(t *testing.T) {
	ctx := context.Background()
	a, b, id, r := rogueScene(t, nil)

	// One good op, then two different ops at the next position.
	first := r.op("hello")
	r.publish(encodeGroup([]*crdt.Op{first}))
	r.seq, r.prev = 1, first.Hash()
	converge(t, id, a, b)
	twinA, twinB := r.op("twin a"), r.op("twin b")
	r.publish(encodeGroup([]*crdt.Op{twinA}))
	time.Sleep(50 * time.Millisecond)
	r.publish(encodeGroup([]*crdt.Op{twinB}))

	var honest []*crdt.Op
	for i := range 5 {
		op, err := a.Write(ctx, id, message(fmt.Sprint("before ", i)))
		if err != nil {
			t.Fatal(err)
		}
		honest = append(honest, op)
	}
	unstall := r.stall(a, 40)
	defer unstall()
	stop := make(chan struct{})
	var flooded sync.WaitGroup
	sent := 0
	junk := r.junk(600, honest)
	flooded.Go(func() { sent = r.flood(stop, junk) })
	for i := range 100 {
		if _, err := a.Write(ctx, id, message(fmt.Sprint("during ", i))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	flooded.Wait()
	converge(t, id, a, b)
	t.Logf("the rogue sent %d messages", sent)

	for _, n := range []*Node{a, b} {
		n.View(id, func(rl *crdt.Realm) error {
			for i := range 100 {
				key := crdt.ObjectKey{Collection: crdt.MessagesCollection, ID: fmt.Sprint("during ", i)}
				if _, err := rl.Object(key); err != nil {
					t.Errorf("%s lacks %q: %v", n.cfg.Name, key.ID, err)
				}
			}
			if head, _ := rl.Head(r.key); head > 2 {
				t.Errorf("%s holds %d ops of the rogue's chain, want at most 2", n.cfg.Name, head)
			}
			if op, err := rl.Op(r.key, 1); err != nil || op.Hash() != first.Hash() {
				t.Errorf("%s does not hold the rogue's first op: %v", n.cfg.Name, err)
			}
			if !slices.ContainsFunc(rl.Evidence(), func(e *crdt.Equivocation) bool { return e.Held.Author == r.key }) {
				t.Errorf("%s holds no evidence of the rogue's equivocation", n.cfg.Name)
			}
			return nil
		})
	}
}

// BenchmarkRogueFlood times a write on an honest node until the other
// honest node has applied it, 300 writes at 100 a second, first with the
// rogue member quiet, then while it floods the topic and stalls streams
// (see TestRogueMember). It reports both medians and p99s and their
// ratios; the target is a ratio of at most 2.
func BenchmarkRogueFlood(b *testing.B) {
	for range b.N {
		var mu sync.Mutex
		seen := map[uint64]time.Time{}
		a, _, id, r := rogueScene(b, func(op *crdt.Op) {
			mu.Lock()
			seen[op.Seq] = time.Now()
			mu.Unlock()
		})
		run := func() []time.Duration {
			written := map[uint64]time.Time{}
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for range 300 {
				<-tick.C
				start := time.Now()
				op, err := a.Write(context.Background(), id, message(fmt.Sprint("timed ", start.UnixNano())))
				if err != nil {
					b.Fatal(err)
				}
				written[op.Seq] = start
			}
			time.Sleep(500 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			var lat []time.Duration
			for seq, start := range written {
				if at, ok := seen[seq]; ok {
					lat = append(lat, at.Sub(start))
				}
			}
			if len(lat) < len(written) {
				b.Errorf("%d of %d writes reached the other honest node by gossip", len(lat), len(written))
			}
			slices.Sort(lat)
			return lat
		}
		quiet := run()
		stop := make(chan struct{})
		junk := r.junk(600, nil)
		unstall := r.stall(a, 40)
		var flooded sync.WaitGroup
		flooded.Go(func() { r.flood(stop, junk) })
		loud := run()
		close(stop)
		flooded.Wait()
		unstall()
		pct := func(l []time.Duration, p float64) float64 {
			return float64(l[int(p*float64(len(l)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(pct(quiet, 0.5), "quiet-p50-ms")
		b.ReportMetric(pct(loud, 0.5), "flood-p50-ms")
		b.ReportMetric(pct(quiet, 0.99), "quiet-p99-ms")
		b.ReportMetric(pct(loud, 0.99), "flood-p99-ms")
		b.ReportMetric(pct(loud, 0.5)/pct(quiet, 0.5), "p50-ratio")
		b.ReportMetric(pct(loud, 0.99)/pct(quiet, 0.99), "p99-ratio")
	}
}
