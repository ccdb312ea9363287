package daemon

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	p2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
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
	h     host.Host
	topic *pubsub.Topic
	priv  ed25519.PrivateKey
	key   crdt.PublicKey
	id    crdt.RealmID
	seq   uint64
	prev  crdt.Hash
}

// honestPair sets up an honest admin a and an honest writer b, connected
// and in each other's mesh; b's applied ops of a's chain are timed by
// arrived.
func honestPair(tb testing.TB, arrived func(*crdt.Op)) (a, b *Node, id crdt.RealmID) {
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
	connect(tb, a, b)
	converge(tb, id, a, b)
	meshed(tb, a, b, id)
	return a, b, id
}

// grantRogue has a admit key's owner as a writer, and waits until b holds
// the grant too.
func grantRogue(tb testing.TB, a, b *Node, id crdt.RealmID, key crdt.PublicKey) {
	if _, err := a.Write(context.Background(), id, &crdt.Grant{Member: key, Role: crdt.RoleWriter, FromSeq: 1, Name: "rogue"}); err != nil {
		tb.Fatal(err)
	}
	converge(tb, id, a, b)
}

// newRogue makes a rogue member of h, a bare libp2p host with gossipsub
// whose key the realm admitted: it connects to the nodes given and
// subscribes to the realm's topic.
func newRogue(h host.Host, ps *pubsub.PubSub, id crdt.RealmID, peers []peer.AddrInfo) (*rogue, error) {
	raw, err := h.Peerstore().PrivKey(h.ID()).Raw()
	if err != nil {
		return nil, err
	}
	r := &rogue{h: h, id: id, priv: ed25519.PrivateKey(raw)}
	copy(r.key[:], r.priv.Public().(ed25519.PublicKey))
	for _, p := range peers {
		if err := h.Connect(context.Background(), p); err != nil {
			return nil, err
		}
	}
	if r.topic, err = ps.Join(topicName(id)); err != nil {
		return nil, err
	}
	if _, err := r.topic.Subscribe(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(waitFor); len(r.topic.ListPeers()) < len(peers); {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the rogue sees %d peers in the topic, want %d", len(r.topic.ListPeers()), len(peers))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r, nil
}

// rogueScene is honestPair with a rogue member in this process.
func rogueScene(tb testing.TB) (a, b *Node, id crdt.RealmID, r *rogue) {
	a, b, id = honestPair(tb, nil)
	h, ps := outsider(tb, false)
	key, ok := authorOf(h.ID())
	if !ok {
		tb.Fatal("the rogue's key is not ed25519")
	}
	granted := time.Now()
	grantRogue(tb, a, b, id, key)
	r, err := newRogue(h, ps, id, []peer.AddrInfo{{ID: a.ID(), Addrs: a.host.Addrs()}, {ID: b.ID(), Addrs: b.host.Addrs()}})
	if err != nil {
		tb.Fatal(err)
	}
	// Both honest nodes hear the rogue in the topic, and are past the
	// check they make resubscribeWait after a grant (replica.reconcile),
	// which could reconnect to it and drop what is on the way.
	for _, n := range []*Node{a, b} {
		rp, err := n.replica(id)
		if err != nil {
			tb.Fatal(err)
		}
		for deadline := time.Now().Add(waitFor); !slices.Contains(rp.topic.ListPeers(), h.ID()); {
			if time.Now().After(deadline) {
				tb.Fatalf("%s does not hear the rogue in the topic", n.cfg.Name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(time.Until(granted.Add(resubscribeWait + 100*time.Millisecond)))
	return a, b, id, r
}

// op makes the next op of the rogue's chain, signed with its key.
func (r *rogue) op(text string) *crdt.Op {
	op := &crdt.Op{Realm: r.id, Author: r.key, Seq: r.seq + 1, Prev: r.prev,
		Clock: crdt.MakeTimestamp(time.Now().UnixMilli(), 0), Body: message(text)}
	if err := op.Sign(r.priv); err != nil {
		panic(err) // a key of the right size signs
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
func (r *rogue) stall(to peer.ID, count int) func() {
	var streams []network.Stream
	for i := range count {
		proto := []string{string(syncProtocol), invite.AcceptProtocol}[i%2]
		s, err := r.h.NewStream(context.Background(), to, protocol.ID(proto))
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
	a, b, id, r := rogueScene(t)

	// One good op, then two different ops at the next position.
	first := r.op("hello")
	r.publish(encodeGroup([]*crdt.Op{first}))
	r.seq, r.prev = 1, first.Hash()
	for _, n := range []*Node{a, b} {
		deadline := time.Now().Add(waitFor)
		for {
			var head uint64
			n.View(id, func(rl *crdt.Realm) error { head, _ = rl.Head(r.key); return nil })
			if head == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never received the rogue's first op", n.cfg.Name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
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
	unstall := r.stall(a.ID(), 40)
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
// honest node has applied it, 300 writes at 100 a second, first with a
// rogue member quiet, then while it floods the topic and holds streams
// open (as in TestRogueMember) from a process of its own, as a rogue
// machine would. It reports both medians and p99s and their ratios (the
// target is a ratio of at most 2), and the CPU the honest nodes used in
// each half: what the flood costs them. On a machine of two cores the
// rogue's own sending takes one of them.
func BenchmarkRogueFlood(b *testing.B) {
	for range b.N {
		var mu sync.Mutex
		seen := map[uint64]time.Time{}
		a, bn, id := honestPair(b, func(op *crdt.Op) {
			mu.Lock()
			seen[op.Seq] = time.Now()
			mu.Unlock()
		})
		seed := make([]byte, ed25519.SeedSize)
		rand.Read(seed)
		var key crdt.PublicKey
		copy(key[:], ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
		grantRogue(b, a, bn, id, key)
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
		cpu0, t0 := processCPU(), time.Now()
		quiet := run()
		quietCPU := float64(processCPU()-cpu0) / float64(time.Since(t0))
		stop := startRogueProc(b, rogueConfig{Seed: seed, Realm: id.String(),
			Peers: []string{addrOf(a), addrOf(bn)}, Stall: 40})
		cpu0, t0 = processCPU(), time.Now()
		loud := run()
		loudCPU := float64(processCPU()-cpu0) / float64(time.Since(t0))
		sent := stop()
		pct := func(l []time.Duration, p float64) float64 {
			return float64(l[int(p*float64(len(l)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(pct(quiet, 0.5), "quiet-p50-ms")
		b.ReportMetric(pct(loud, 0.5), "flood-p50-ms")
		b.ReportMetric(pct(quiet, 0.99), "quiet-p99-ms")
		b.ReportMetric(pct(loud, 0.99), "flood-p99-ms")
		b.ReportMetric(pct(loud, 0.5)/pct(quiet, 0.5), "p50-ratio")
		b.ReportMetric(pct(loud, 0.99)/pct(quiet, 0.99), "p99-ratio")
		b.ReportMetric(float64(sent)/3, "rogue-msgs/s")
		b.ReportMetric(100*quietCPU, "honest-quiet-cpu-%")
		b.ReportMetric(100*loudCPU, "honest-flood-cpu-%")
	}
}

// processCPU returns the CPU time this process has used, the two honest
// nodes' and the test's.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// addrOf is a node's first address with its peer id, as text.
func addrOf(n *Node) string {
	return n.host.Addrs()[0].String() + "/p2p/" + n.ID().String()
}

// The rogue of BenchmarkRogueFlood runs this test binary again as a
// child: with rogueEnv set to its configuration, TestMain floods.
const rogueEnv = "REALMSYNC_TEST_ROGUE"

// rogueConfig is what the rogue child is told.
type rogueConfig struct {
	Seed  []byte   // of its ed25519 key, which the realm admitted
	Realm string   // the realm's id
	Peers []string // multiaddrs with peer ids of the nodes to flood
	Stall int      // streams to hold open to the first of them
}

// startRogueProc starts the rogue child and waits until it floods; the
// function it returns stops it and returns how many messages it sent.
func startRogueProc(tb testing.TB, cfg rogueConfig) func() int {
	raw, _ := json.Marshal(cfg)
	cmd, in, out := startSelf(tb, rogueEnv+"="+string(raw))
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "flooding" {
		cmd.Process.Kill()
		cmd.Wait()
		tb.Fatalf("the rogue did not start flooding: %q", lines.Text())
	}
	return func() int {
		in.Close()
		lines.Scan()
		sent, _ := strconv.Atoi(lines.Text())
		cmd.Wait()
		return sent
	}
}

// runRogue is the rogue child: it joins the realm's topic with its key,
// floods it and stalls streams until its stdin closes, then prints how
// many messages it sent.
func runRogue(config string, in io.Reader, out io.Writer) error {
	var cfg rogueConfig
	if err := json.Unmarshal([]byte(config), &cfg); err != nil {
		return err
	}
	id, err := crdt.ParseHash(cfg.Realm)
	if err != nil {
		return err
	}
	sk, err := p2pcrypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(cfg.Seed))
	if err != nil {
		return err
	}
	h, err := libp2p.New(libp2p.Identity(sk), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		return err
	}
	defer h.Close()
	ps, err := pubsub.NewGossipSub(context.Background(), h, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(), pubsub.WithMessageIdFn(opID))
	if err != nil {
		return err
	}
	var peers []peer.AddrInfo
	for _, s := range cfg.Peers {
		info, err := peer.AddrInfoFromString(s)
		if err != nil {
			return err
		}
		peers = append(peers, *info)
	}
	r, err := newRogue(h, ps, id, peers)
	if err != nil {
		return err
	}
	junk := r.junk(600, nil)
	unstall := r.stall(peers[0].ID, cfg.Stall)
	defer unstall()
	fmt.Fprintln(out, "flooding")
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, in)
		close(stop)
	}()
	fmt.Fprintln(out, r.flood(stop, junk))
	return nil
}
