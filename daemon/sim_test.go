package daemon

import (
	"bufio"
	"bytes"
	"cmp"
	"container/heap"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/cryptotest"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/realmsync/realmsync/crdt"
)

// The deterministic simulation runs several replicas of one realm, each
// made of the engine and this package's sync logic (the gossip and
// catch-up codecs, serveRealm, judgeGossip, judgeRange, applyPeerOps and
// the keyring), over a simulated network in virtual time. One seeded
// source decides everything: which node writes what, gossip lost,
// duplicated and delayed (and so reordered), partitions that form and
// heal, crashes at any moment (in the middle of a catch-up, between a
// group's write and its sync) that keep a random part of what was not
// synced yet, and skewed clocks. Writes include grants, role changes,
// revocations and new key epochs. After the faults stop and the network
// goes quiet, every member holds the same digest, and every write that
// was acknowledged is there (or was cut off by a revocation).
//
// A failure names its seed; -sim.seed=N -sim.seeds=1 -sim.trace replays
// it exactly, with a trace of every step.
var (
	simSeeds = flag.Int("sim.seeds", 1000, "how many seeds TestSimulation runs")
	simSeed  = flag.Uint64("sim.seed", 1, "the first seed TestSimulation runs")
	simTrace = flag.Bool("sim.trace", false, "TestSimulation prints every step it takes")
)

func TestSimulation(t *testing.T) {
	start := time.Now()
	var total simStats
	for seed := *simSeed; seed < *simSeed+uint64(*simSeeds); seed++ {
		cryptotest.SetGlobalRandom(t, seed) // the epoch keys' boxes
		s := newSim(seed)
		if *simTrace {
			s.trace = func(format string, args ...any) { t.Logf("%8dms "+format, append([]any{s.now}, args...)...) }
		}
		err := s.run()
		if err != nil {
			t.Fatalf("seed %d: %v\nreplay: go test ./daemon -run 'TestSimulation$' -sim.seed=%d -sim.seeds=1 -sim.trace", seed, err, seed)
		}
		total.add(s.stats)
	}
	t.Logf("%d seeds in %s: %s", *simSeeds, time.Since(start).Round(time.Millisecond), total)
}

// simStats counts what the simulations did.
type simStats struct {
	writes, acked, crashes, partitions, gossip, lost, pulls, rotations, grants, revokes, keyFetches int
}

func (a *simStats) add(b simStats) {
	a.writes += b.writes
	a.acked += b.acked
	a.crashes += b.crashes
	a.partitions += b.partitions
	a.gossip += b.gossip
	a.lost += b.lost
	a.pulls += b.pulls
	a.rotations += b.rotations
	a.grants += b.grants
	a.revokes += b.revokes
	a.keyFetches += b.keyFetches
}

func (a simStats) String() string {
	return fmt.Sprintf("%d ops written (%d acknowledged), %d crashes, %d partitions, %d gossip messages (%d lost), "+
		"%d catch-ups, %d grants, %d revocations, %d new key epochs, %d keys fetched by members who lacked them",
		a.writes, a.acked, a.crashes, a.partitions, a.gossip, a.lost, a.pulls, a.grants, a.revokes, a.rotations, a.keyFetches)
}

// Timing of the simulation, in virtual milliseconds.
const (
	simSyncEvery  = int64(DefaultSyncInterval / time.Millisecond)
	simTickEvery  = 100
	simGapWait    = int64(gapWait / time.Millisecond)
	simJoinEvery  = int64(joinPullEvery / time.Millisecond)
	simSpreadWait = int64(spreadEvery / time.Millisecond)
	simKeysEvery  = int64(keysAskEvery / time.Millisecond)
)

type sim struct {
	seed     uint64
	rng      *rand.Rand
	now      int64 // virtual time, ms
	queue    simQueue
	seq      uint64 // orders events due at the same time
	nodes    []*simNode
	realm    crdt.RealmID
	cut      [][]bool // cut[i][j]: i and j cannot reach each other
	syncTime int64    // the longest a sync of the disk takes, ms
	loss     float64  // the share of gossip messages lost
	dup      float64  // the share of gossip messages delivered twice
	quiet    bool     // the faults and the writes have stopped
	acked    map[simRef]crdt.Hash
	err      error
	stats    simStats
	trace    func(format string, args ...any)
}

// simRef names one op of one chain.
type simRef struct {
	author crdt.PublicKey
	seq    uint64
}

func newSim(seed uint64) *sim {
	s := &sim{seed: seed, rng: rand.New(rand.NewPCG(seed, 0x5eed)), acked: make(map[simRef]crdt.Hash),
		now: 1_800_000_000_000}
	s.loss = []float64{0, 0.05, 0.3}[s.rng.IntN(3)]
	s.dup = []float64{0, 0.1}[s.rng.IntN(2)]
	s.syncTime = []int64{5, 30, 200}[s.rng.IntN(3)]
	n := 3 + s.rng.IntN(3)
	s.cut = make([][]bool, n)
	for i := range n {
		s.cut[i] = make([]bool, n)
		s.nodes = append(s.nodes, newSimNode(s, i))
	}
	return s
}

func (s *sim) logf(format string, args ...any) {
	if s.trace != nil {
		s.trace(format, args...)
	}
}

// fail records the first broken rule; the run stops there.
func (s *sim) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("at %d ms: %s", s.now-1_800_000_000_000, fmt.Sprintf(format, args...))
	}
}

// after runs fn d ms from now.
func (s *sim) after(d int64, fn func()) {
	s.seq++
	heap.Push(&s.queue, &simEvent{at: s.now + d, seq: s.seq, fn: fn})
}

// every runs fn every d ms, each time after a jitter of up to d/4.
func (s *sim) every(d int64, fn func()) {
	var next func()
	next = func() {
		fn()
		s.after(d+s.rng.Int64N(d/4+1), next)
	}
	s.after(s.rng.Int64N(d), next)
}

// runUntil runs events until the virtual time reaches end.
func (s *sim) runUntil(end int64) {
	for s.err == nil && s.queue.Len() > 0 && s.queue[0].at <= end {
		e := heap.Pop(&s.queue).(*simEvent)
		s.now = e.at
		e.fn()
	}
	s.now = max(s.now, end)
}

func (s *sim) linked(a, b *simNode) bool { return !s.cut[a.i][b.i] }

// send delivers fn's message from a to b after a delay, unless a cut, a
// crash of either end or a restart comes first: it travels over their
// connection, which none of these leaves standing.
func (s *sim) send(a, b *simNode, fn func()) {
	if !s.linked(a, b) || a.r == nil || b.r == nil {
		return
	}
	lifeA, lifeB := a.life, b.life
	s.after(1+s.rng.Int64N(20), func() {
		if a.life == lifeA && b.life == lifeB && s.linked(a, b) {
			fn()
		}
	})
}

func (s *sim) run() error {
	for _, n := range s.nodes {
		n.skew = s.rng.Int64N(4001) - 2000
		if s.rng.IntN(8) == 0 { // a clock far off, whose ops others hold
			n.skew = (crdt.MaxClockSkew + s.rng.Int64N(30_000)) * []int64{-1, 1}[s.rng.IntN(2)]
		}
		s.logf("%s: clock %+d ms", n.name, n.skew)
	}
	a := s.nodes[0]
	if err := a.create(); err != nil {
		return err
	}
	// Every other node is admitted by an admin at some point, most of
	// them at once.
	for _, x := range s.nodes[1:] {
		role := []crdt.Role{crdt.RoleReader, crdt.RoleWriter, crdt.RoleWriter, crdt.RoleAdmin}[s.rng.IntN(4)]
		s.after(s.rng.Int64N(3)*s.rng.Int64N(5000), func() { s.admit(x, role) })
	}
	for _, n := range s.nodes {
		n.startTimers()
	}
	busy := 3_000 + s.rng.Int64N(6_000)
	s.every(40+s.rng.Int64N(160), s.randomWrite)
	s.every(700, s.randomFault)
	s.runUntil(s.now + busy)

	// The faults and the writes stop; everyone comes back and the
	// network is left alone until it is quiet.
	s.quiet = true
	s.logf("quiet")
	for i := range s.cut {
		clear(s.cut[i])
	}
	for _, n := range s.nodes {
		if n.r == nil {
			n.restart()
		}
	}
	// An op stamped more than crdt.MaxClockSkew ahead of a node's clock
	// waits there until the clock catches up.
	lo, hi := s.nodes[0].skew, s.nodes[0].skew
	for _, n := range s.nodes {
		lo, hi = min(lo, n.skew), max(hi, n.skew)
	}
	s.runUntil(s.now + max(0, hi-lo-crdt.MaxClockSkew) + 3*simSyncEvery)
	if s.err != nil {
		return s.err
	}
	return s.check()
}

// randomWrite has a random node that is up write one to three ops, as
// its role (as it sees it) allows.
func (s *sim) randomWrite() {
	if s.quiet {
		return
	}
	n := s.nodes[s.rng.IntN(len(s.nodes))]
	if n.r == nil || !n.r.HasGenesis() || !n.admitted {
		return
	}
	role := n.r.Role(n.pub)
	switch {
	case role == crdt.RoleNone:
		return
	case role == crdt.RoleAdmin && s.rng.IntN(12) == 0:
		s.adminWrite(n)
		return
	case role < crdt.RoleWriter:
		if s.rng.IntN(200) == 0 && n.i != 0 {
			n.write([]crdt.Body{&crdt.Leave{}})
		}
		return
	}
	var bodies []crdt.Body
	for range 1 + s.rng.IntN(3) {
		bodies = append(bodies, s.dataBody(n))
	}
	n.write(bodies)
	if s.rng.IntN(40) == 0 { // a crash before the group is durable, perhaps
		life := n.life
		s.after(s.rng.Int64N(s.syncTime), func() {
			if n.life == life {
				n.crash()
				s.after(50+s.rng.Int64N(1000), func() {
					if n.r == nil {
						n.restart()
					}
				})
			}
		})
	}
}

func (s *sim) dataBody(n *simNode) crdt.Body {
	obj := fmt.Sprintf("k%d", s.rng.IntN(4))
	switch s.rng.IntN(8) {
	case 0, 1, 2:
		return &crdt.Set{Collection: crdt.MessagesCollection,
			Fields: []crdt.Field{{Name: "text", Value: fmt.Appendf(nil, "from %s at %d", n.name, s.now)}}}
	case 3:
		return &crdt.Set{Collection: "o", ID: obj,
			Fields: []crdt.Field{{Name: fmt.Sprintf("f%d", s.rng.IntN(3)), Value: fmt.Appendf(nil, "%s%d", n.name, s.rng.IntN(10))}}}
	case 4:
		return &crdt.Delete{Collection: "o", ID: obj}
	case 5:
		return &crdt.Counter{Collection: "o", ID: obj, Field: "n", Delta: s.rng.Int64N(11) - 5}
	case 6:
		return &crdt.SetAdd{Collection: "o", ID: obj, Field: "s", Elem: fmt.Appendf(nil, "e%d", s.rng.IntN(3))}
	}
	rm := &crdt.SetRemove{Collection: "o", ID: obj, Field: "s", Elem: fmt.Appendf(nil, "e%d", s.rng.IntN(3))}
	if o, err := n.r.Object(crdt.ObjectKey{Collection: "o", ID: obj}); err == nil {
		for _, set := range o.Sets {
			for _, e := range set.Elems {
				if set.Name == rm.Field && bytes.Equal(e.Value, rm.Elem) {
					rm.Tags = e.Tags
				}
			}
		}
	}
	return rm
}

// adminWrite has an admin admit a node that is not a member, change a
// member's role, revoke one, or start a new key epoch.
func (s *sim) adminWrite(n *simNode) {
	x := s.nodes[s.rng.IntN(len(s.nodes))]
	role := crdt.Role(1 + s.rng.IntN(3))
	switch current := n.r.Role(x.pub); {
	case s.rng.IntN(3) == 0:
		n.rotate()
	case x == n || x.i == 0:
	case current == crdt.RoleNone:
		if x.r != nil && s.linked(n, x) {
			x.admitted = false // it presents an offer until it holds the keys
			n.grant(x, role)
			s.after(1000, func() { s.admit(x, role) })
		}
	case s.rng.IntN(3) == 0:
		head, _ := n.r.Head(x.pub)
		s.stats.revokes++
		s.logf("%s revokes %s after #%d", n.name, x.name, head)
		n.write([]crdt.Body{&crdt.Revoke{Member: x.pub, LastSeq: head}})
	default:
		head, _ := n.r.Head(x.pub)
		n.write([]crdt.Body{&crdt.ChangeRole{Member: x.pub, Role: role, FromSeq: head + 1}})
	}
}

// admit has x present its offer to node 0 or, if it cannot, to another
// admin that is up, until it holds the realm's keys. An admin that holds
// x's grant already answers at once, without writing another.
func (s *sim) admit(x *simNode, role crdt.Role) {
	if x.admitted {
		return
	}
	for _, n := range append([]*simNode{s.nodes[0]}, s.nodes[1:]...) {
		if n == x || n.r == nil || x.r == nil || !n.admitted || n.r.Role(n.pub) != crdt.RoleAdmin || !s.linked(n, x) {
			continue
		}
		if n.isMember(x) {
			n.handKeys(x)
		} else {
			n.grant(x, role)
		}
		break
	}
	s.after(1000, func() { s.admit(x, role) })
}

// randomFault crashes a node, cuts the network in two, or heals it.
func (s *sim) randomFault() {
	if s.quiet {
		return
	}
	switch s.rng.IntN(4) {
	case 0, 1:
		n := s.nodes[s.rng.IntN(len(s.nodes))]
		if n.r != nil {
			n.crash()
			s.after(50+s.rng.Int64N(3000), func() {
				if n.r == nil {
					n.restart()
				}
			})
		}
	case 2:
		s.stats.partitions++
		side := make([]bool, len(s.nodes))
		for i := range side {
			side[i] = s.rng.IntN(2) == 0
		}
		s.logf("partition %v", side)
		for i := range s.cut {
			for j := range s.cut[i] {
				s.cut[i][j] = side[i] != side[j]
			}
		}
	case 3:
		s.logf("healed")
		for i := range s.cut {
			clear(s.cut[i])
		}
	}
}

// check verifies the end state: the members (as node 0 sees them) hold
// one digest and no evidence of equivocation, and every acknowledged op
// is in every member's replica, unless a revocation cut it off.
func (s *sim) check() error {
	a := s.nodes[0]
	var members []*simNode
	for _, n := range s.nodes {
		if a.r.Role(n.pub) != crdt.RoleNone {
			members = append(members, n)
		}
	}
	for _, n := range members {
		if len(n.r.Evidence()) > 0 {
			return fmt.Errorf("%s holds evidence of equivocation", n.name)
		}
		if d, want := n.r.Digest(), a.r.Digest(); d != want {
			return fmt.Errorf("%s's digest differs from %s's: versions %v and %v, missing %v", n.name, a.name,
				s.vv(n), s.vv(a), n.r.Missing())
		}
	}
	cut := s.cutOff(a)
	refs := slices.SortedFunc(maps.Keys(s.acked), func(x, y simRef) int {
		return cmp.Or(bytes.Compare(x.author[:], y.author[:]), cmp.Compare(x.seq, y.seq))
	})
	for _, ref := range refs {
		hash := s.acked[ref]
		if cut(ref) {
			continue // without effect, so replicas may or may not keep it
		}
		op, err := a.r.Op(ref.author, ref.seq)
		if err != nil {
			return fmt.Errorf("acknowledged op %s#%d of %s is missing: %v", ref.author.Short(), ref.seq, s.name(ref.author), err)
		}
		if op.Hash() != hash {
			return fmt.Errorf("acknowledged op %s#%d was replaced by another", ref.author.Short(), ref.seq)
		}
		for _, n := range members {
			if other, err := n.r.Op(ref.author, ref.seq); err != nil || other.Hash() != hash {
				return fmt.Errorf("%s lacks acknowledged op %s#%d of %s: %v (versions %v; %s: %v)", n.name, ref.author.Short(), ref.seq, s.name(ref.author), err, s.vv(n), a.name, s.vv(a))
			}
		}
	}
	return nil
}

// cutOff returns, from what n holds, a test of whether a membership op
// took away the effect of an op: a revocation that kept only the ops
// before it, or a grant that admitted the author again from a later seq.
// (Ops of an author who is not a member at the end, whose grant a
// demotion of its admin voided, say, may be missing too.)
func (s *sim) cutOff(n *simNode) func(simRef) bool {
	kept := make(map[crdt.PublicKey]uint64) // the lowest LastSeq a revocation of each member kept
	from := make(map[crdt.PublicKey]uint64) // the highest seq a grant of each member started from
	for author := range n.r.VersionVector() {
		n.r.Ops(author, 1, func(op *crdt.Op) bool {
			switch b := op.Body.(type) {
			case *crdt.Revoke:
				if last, ok := kept[b.Member]; !ok || b.LastSeq < last {
					kept[b.Member] = b.LastSeq
				}
			case *crdt.Grant:
				from[b.Member] = max(from[b.Member], b.FromSeq)
			}
			return true
		})
	}
	return func(ref simRef) bool {
		last, revoked := kept[ref.author]
		return revoked && ref.seq > last || ref.seq < from[ref.author] || n.r.Role(ref.author) == crdt.RoleNone
	}
}

func (s *sim) name(k crdt.PublicKey) string {
	for _, n := range s.nodes {
		if n.pub == k {
			return n.name
		}
	}
	return k.Short()
}

func (s *sim) vv(n *simNode) string {
	var parts []string
	for _, m := range s.nodes {
		h, _ := n.r.Head(m.pub)
		parts = append(parts, fmt.Sprintf("%s:%d", m.name, h))
	}
	return strings.Join(parts, " ")
}

// simNode is one node: its disk, and while it is up, its replica.
type simNode struct {
	s        *sim
	i        int
	name     string
	priv     ed25519.PrivateKey
	pub      crdt.PublicKey
	disk     *simDisk
	skew     int64
	admitted bool // it holds the realm's keys: created it, or was handed them

	// What lives in memory, lost in a crash.
	r        *crdt.Realm // nil while the node is down
	ring     *keyring
	life     int        // bumped at every crash
	durable  uint64     // the head of its own chain on disk
	pending  []simGroup // groups written, waiting for the sync
	syncDue  bool
	seen     map[string]bool // gossip message ids seen, as pubsub keeps them
	gap      *simGap
	pulls    map[int]*pullDue // catch-ups under way, by peer
	spreadAt int64
	spreadOn bool
	joinAt   int64
	keysAt   int64
}

type simGroup struct {
	ops   []*crdt.Op
	grant *simNode // the invitee to hand the keys to once the grant is durable
}

type simGap struct {
	from *simNode
	at   int64
}

func newSimNode(s *sim, i int) *simNode {
	name := string(rune('a' + i))
	var seed [32]byte
	binary.BigEndian.PutUint64(seed[:], s.seed)
	seed[31] = byte(i)
	priv := ed25519.NewKeyFromSeed(seed[:])
	n := &simNode{s: s, i: i, name: name, priv: priv, disk: newSimDisk()}
	copy(n.pub[:], priv.Public().(ed25519.PublicKey))
	return n
}

func (n *simNode) clock() int64 { return n.s.now + n.skew }

// create makes the realm on node 0, with the key of epoch 0.
func (n *simNode) create() error {
	s := n.s
	var nonce [16]byte
	binary.BigEndian.PutUint64(nonce[:], s.rng.Uint64())
	b := crdt.NewBatch()
	r, _, err := crdt.Create(n.disk.live, b, n.priv, "sim", n.name, nonce, n.clock())
	if err != nil {
		return err
	}
	s.realm = r.ID()
	key := s.key()
	b.Put(keyKey(r.ID(), crdt.RealmKey{Epoch: 0, Key: key}), key[:])
	n.disk.write(b)
	n.disk.sync()
	n.admitted = true
	for _, m := range s.nodes {
		m.open()
	}
	return s.err
}

// key draws an epoch key from the simulation's source.
func (s *sim) key() crdt.EpochKey {
	var k crdt.EpochKey
	for i := 0; i < len(k); i += 8 {
		binary.BigEndian.PutUint64(k[i:], s.rng.Uint64())
	}
	return k
}

// open reads the replica from what is on disk, as a starting daemon does.
func (n *simNode) open() {
	r, err := crdt.Open(n.disk.live, n.s.realm)
	if err != nil {
		n.s.fail("%s: open: %v", n.name, err)
		return
	}
	ring, err := loadKeyring(n.disk.live, n.s.realm, n.pub, n.priv)
	if err != nil {
		n.s.fail("%s: keys: %v", n.name, err)
		return
	}
	r.SetKeyring(ring)
	n.r, n.ring = r, ring
	n.durable, _ = r.Head(n.pub)
	n.seen = make(map[string]bool)
	n.pulls = make(map[int]*pullDue)
}

func (n *simNode) crash() {
	n.s.stats.crashes++
	kept := n.disk.crash(n.s.rng)
	n.s.logf("%s crashes (%d unsynced batches kept)", n.name, kept)
	n.r, n.ring = nil, nil
	n.life++
	n.pending, n.syncDue, n.gap, n.spreadOn = nil, false, nil, false
}

func (n *simNode) restart() {
	n.s.logf("%s restarts", n.name)
	n.open()
}

func (n *simNode) startTimers() {
	s := n.s
	s.every(simTickEvery, func() {
		if n.r != nil {
			n.tick()
		}
	})
	s.every(simSyncEvery, func() {
		if n.r == nil {
			return
		}
		for _, p := range s.nodes {
			if p != n && p.r != nil && s.linked(n, p) && n.shares(p) {
				n.wantPull(p, false)
			}
		}
	})
}

func (n *simNode) isMember(p *simNode) bool { return n.r.Role(p.pub) != crdt.RoleNone }

// shares mirrors replica.shares.
func (n *simNode) shares(p *simNode) bool { return n.isMember(p) || !n.r.HasGenesis() }

// tick mirrors replica.tick.
func (n *simNode) tick() {
	s := n.s
	b := crdt.NewBatch()
	n.r.Tick(b, n.clock())
	n.stage(b)
	if !n.r.HasGenesis() && s.now-n.joinAt >= simJoinEvery {
		n.joinAt = s.now
		for _, p := range s.nodes {
			if p != n && p.r != nil && s.linked(n, p) {
				n.wantPull(p, false)
			}
		}
	}
	if g := n.gap; g != nil && s.now-g.at >= simGapWait {
		n.gap = nil
		if len(n.r.Missing()) > 0 && g.from.r != nil {
			n.wantPull(g.from, false)
		}
	}
	if n.admitted && s.now-n.keysAt >= simKeysEvery {
		if wanted := n.r.KeysWanted(); len(wanted) > 0 {
			n.keysAt = s.now
			n.fetchKeys(wanted)
		}
	}
}

// fetchKeys mirrors replica.fetchKeys: it asks the members it reaches,
// one after the other, until the realm wants no key (without the growing
// pause between fruitless rounds).
func (n *simNode) fetchKeys(wanted []uint32) {
	s := n.s
	var peers []*simNode
	for _, p := range s.nodes {
		if p != n && p.r != nil && s.linked(n, p) && n.isMember(p) {
			peers = append(peers, p)
		}
	}
	s.rng.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	n.askKeysOf(peers, wanted[:min(len(wanted), maxKeysAsked)])
}

// askKeysOf asks the first of peers for keys, and the next once it has
// answered, while some are still wanted.
func (n *simNode) askKeysOf(peers []*simNode, wanted []uint32) {
	s := n.s
	if len(peers) == 0 || len(wanted) == 0 || n.r == nil {
		return
	}
	p := peers[0]
	ask := (&keyAsk{realm: s.realm, epochs: wanted}).encode()
	s.send(n, p, func() {
		a, err := decodeKeyAsk(ask)
		if err != nil {
			s.fail("%s: key ask from %s: %v", p.name, n.name, err)
			return
		}
		if !p.isMember(n) {
			return
		}
		answer := encodeKeys(answerKeys(p.r, p.ring, p.priv, a.epochs))
		s.send(p, n, func() {
			keys, err := decodeKeys(answer)
			if err != nil {
				s.fail("%s: keys from %s: %v", n.name, p.name, err)
				return
			}
			b := crdt.NewBatch()
			n.ring.putFetched(b, s.realm, keysToKeep(n.r, n.ring, keys, wanted))
			if b.Len() > 0 {
				s.stats.keyFetches++
				n.disk.write(b)
				n.disk.sync()
				s.logf("%s keeps keys of epochs %v from %s", n.name, wanted, p.name)
				n.tick()
			}
			n.askKeysOf(peers[1:], n.r.KeysWanted())
		})
	})
}

// stage hands a batch, and the keys the keyring opened, to the disk,
// which syncs it soon.
func (n *simNode) stage(b *crdt.Batch) {
	n.ring.store(b)
	if b.Len() == 0 {
		return
	}
	n.disk.write(b)
	if !n.syncDue {
		n.syncDue = true
		life := n.life
		n.s.after(1+n.s.rng.Int64N(n.s.syncTime), func() {
			if n.life == life {
				n.sync()
			}
		})
	}
}

// sync makes everything written durable: the local writes waiting for it
// are acknowledged and published, as the daemon's group commit does.
func (n *simNode) sync() {
	s := n.s
	n.syncDue = false
	n.disk.sync()
	for _, g := range n.pending {
		for _, op := range g.ops {
			s.acked[simRef{op.Author, op.Seq}] = op.Hash()
			s.stats.acked++
		}
		n.durable = g.ops[len(g.ops)-1].Seq
		n.publish(g.ops)
		if g.grant != nil {
			n.handKeys(g.grant)
		}
	}
	n.pending = nil
}

// write writes bodies as one group of this node's chain, as
// writeQueuedLocked does.
func (n *simNode) write(bodies []crdt.Body) {
	b := crdt.NewBatch()
	var ops []*crdt.Op
	for _, body := range bodies {
		op, _, err := n.r.WriteUnsigned(b, n.priv, body, n.clock())
		if err != nil {
			n.s.logf("%s: write %s: %v", n.name, body.Kind(), err)
			continue
		}
		ops = append(ops, op)
	}
	if len(ops) == 0 {
		return
	}
	n.r.SignHead(b, n.priv)
	n.s.stats.writes += len(ops)
	g := simGroup{ops: ops}
	if gr, ok := ops[len(ops)-1].Body.(*crdt.Grant); ok {
		g.grant = n.s.nodes[slices.IndexFunc(n.s.nodes, func(m *simNode) bool { return m.pub == gr.Member })]
	}
	n.pending = append(n.pending, g)
	n.stage(b)
}

// grant admits x with role, from past the head of its chain that x
// reports, as the acceptance handshake does; x is handed the keys once
// the grant is durable.
func (n *simNode) grant(x *simNode, role crdt.Role) {
	n.s.stats.grants++
	seen, _ := n.r.Head(x.pub)
	own, _ := x.r.Head(x.pub)
	n.s.logf("%s admits %s as %s", n.name, x.name, role)
	n.write([]crdt.Body{&crdt.Grant{Member: x.pub, Role: role, FromSeq: max(seen, own) + 1, Name: x.name}})
}

// handKeys gives x every key this node holds, as the acceptance response
// does; x stores them before it goes on.
func (n *simNode) handKeys(x *simNode) {
	keys := n.ring.all()
	n.s.send(n, x, func() {
		b := crdt.NewBatch()
		x.ring.put(b, n.s.realm, keys)
		x.disk.write(b)
		x.disk.sync()
		x.admitted = true
		for _, p := range n.s.nodes {
			if p != x && p.r != nil && n.s.linked(x, p) {
				x.wantPull(p, false)
			}
		}
	})
}

// rotate starts a new key epoch, as rotateKey does: the key is sealed to
// each member, this node too, in an Epoch op, and reaches the keyring by
// its box when the op is written.
func (n *simNode) rotate() {
	s := n.s
	key := s.key()
	epoch, _ := n.r.KeyEpoch()
	body := &crdt.Epoch{Number: epoch + 1}
	for _, m := range n.r.Members() {
		box, err := sealKeyTo(m.Key, &key, s.realm, epoch+1)
		if err != nil {
			s.fail("seal: %v", err)
			return
		}
		body.Keys = append(body.Keys, crdt.SealedKey{Member: m.Key, Box: box})
	}
	s.stats.rotations++
	s.logf("%s starts key epoch %d", n.name, epoch+1)
	n.write([]crdt.Body{body})
}

// publish gossips a group to the members this node reaches.
func (n *simNode) publish(ops []*crdt.Op) {
	id := ops[len(ops)-1].Hash().String()
	n.seen[id] = true
	n.forward(nil, encodeGroup(ops), id)
}

// forward sends a gossip message on to every member this node reaches
// but from, losing and duplicating some.
func (n *simNode) forward(from *simNode, data []byte, id string) {
	s := n.s
	for _, p := range s.nodes {
		if p == n || p == from || p.r == nil || !s.linked(n, p) || !n.isMember(p) {
			continue
		}
		s.stats.gossip++
		copies := 1
		switch r := s.rng.Float64(); {
		case r < s.loss:
			s.stats.lost++
			copies = 0
		case r < s.loss+s.dup:
			copies = 2
		}
		for range copies {
			s.send(n, p, func() { p.receive(n, data, id) })
		}
	}
}

// receive mirrors replica.validate, and pubsub's duplicate check and
// forwarding around it.
func (n *simNode) receive(from *simNode, data []byte, id string) {
	if n.seen[id] {
		return
	}
	n.seen[id] = true
	if !n.r.HasGenesis() || !n.isMember(from) {
		return
	}
	ops, err := decodeGroup(data)
	if err != nil {
		n.s.fail("%s: gossip from %s does not decode: %v", n.name, from.name, err)
		return
	}
	res, err := n.applyPeer(ops, false)
	v := judgeGossip(res, err)
	switch {
	case v.result == pubsub.ValidationReject:
		n.s.fail("%s rejects gossip from %s: %v", n.name, from.name, err)
	case v.pull:
		n.wantPull(from, false)
	case v.gap && n.gap == nil:
		n.gap = &simGap{from: from, at: n.s.now}
	}
	if v.result == pubsub.ValidationAccept {
		n.forward(from, data, id)
	}
}

// applyPeer applies a peer's ops as replica.apply does. An honest peer's
// ops never reveal an equivocation.
func (n *simNode) applyPeer(ops []*crdt.Op, ranged bool) (*crdt.Result, error) {
	b := crdt.NewBatch()
	res, err, evErr := applyPeerOps(n.r, b, ops, ranged, n.clock())
	var eq *crdt.Equivocation
	if errors.As(err, &eq) || evErr != nil {
		n.s.fail("%s: equivocation among honest nodes: %v", n.name, err)
	}
	n.stage(b)
	return res, err
}

// wantPull mirrors Node.requestPull: one catch-up per peer at a time, a
// request while one runs makes it go once more.
func (n *simNode) wantPull(p *simNode, push bool) {
	if d := n.pulls[p.i]; d != nil {
		d.again, d.push = true, d.push || push
		return
	}
	n.pulls[p.i] = &pullDue{}
	n.s.stats.pulls++
	n.pullRound(p, push, 0)
}

func (n *simNode) pullEnded(p *simNode) {
	d := n.pulls[p.i]
	delete(n.pulls, p.i)
	if d != nil && d.again {
		n.wantPull(p, d.push)
	}
}

// pullRound mirrors pullOnce: the ask goes out, the ranges come back frame
// by frame, each applied as it arrives; a crash or a cut between two
// frames ends the catch-up where it is.
func (n *simNode) pullRound(p *simNode, push bool, round int) {
	s := n.s
	if !n.shares(p) || !s.linked(n, p) || p.r == nil {
		n.pullEnded(p)
		return
	}
	a := &ask{push: push, realms: []realmVV{{id: s.realm, vv: n.r.VersionVector()}}}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	writeFrame(w, frameAsk, a.encode())
	w.Flush()
	lifeN, lifeP := n.life, p.life
	ended := func() bool { return n.life != lifeN || p.life != lifeP || !s.linked(n, p) }
	s.after(1+s.rng.Int64N(20), func() {
		if ended() {
			if n.life == lifeN {
				n.pullEnded(p)
			}
			return
		}
		frames := p.serve(n, buf.Bytes())
		at := int64(0)
		applied, again := 0, false
		for _, f := range frames {
			at += 1 + s.rng.Int64N(5)
			s.after(at, func() {
				if n.life != lifeN || n.pulls[p.i] == nil {
					return // the catch-up ended already
				}
				if ended() {
					n.pullEnded(p)
					return
				}
				switch done, more, k := n.takeFrame(p, f); {
				case s.err != nil:
				case !done:
					applied += k
					again = again || more
				case applied > 0:
					n.spread()
					fallthrough
				default:
					if again && round+1 < syncRounds {
						n.pullRound(p, push, round+1)
					} else {
						n.pullEnded(p)
					}
				}
			})
		}
	})
}

// serve mirrors serveSync: p reads the ask from n and returns the frames
// of its answer.
func (p *simNode) serve(n *simNode, raw []byte) [][]byte {
	s := p.s
	typ, payload, err := readFrame(bytes.NewReader(raw))
	if err != nil || typ != frameAsk {
		s.fail("%s: ask from %s unread: %v", p.name, n.name, err)
		return nil
	}
	a, err := decodeAsk(payload)
	if err != nil {
		s.fail("%s: ask from %s: %v", p.name, n.name, err)
		return nil
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	for _, rv := range a.realms {
		if rv.id != s.realm || !p.isMember(n) {
			continue
		}
		if _, err := serveRealm(w, p.r, &sync.Mutex{}, rv.vv, p.pub, p.durable, func() {}); err != nil {
			s.fail("%s: serve: %v", p.name, err)
		}
		if a.push && p.behindOf(rv.vv) {
			p.wantPull(n, false)
		}
	}
	writeFrame(w, frameDone, nil)
	w.Flush()
	var frames [][]byte
	for b := buf.Bytes(); len(b) > 0; {
		k := 4 + int(binary.BigEndian.Uint32(b))
		frames, b = append(frames, b[:k]), b[k:]
	}
	return frames
}

func (p *simNode) behindOf(theirs map[crdt.PublicKey]uint64) bool {
	for a, seq := range theirs {
		if head, _ := p.r.Head(a); seq > head {
			return true
		}
	}
	return false
}

// takeFrame mirrors the loop of pullOnce over one frame: done is the
// stream's end; else the range was applied, k ops stored, and more says
// another round may take what was refused.
func (n *simNode) takeFrame(p *simNode, raw []byte) (done, more bool, k int) {
	typ, payload, err := readFrame(bytes.NewReader(raw))
	if err != nil {
		n.s.fail("%s: frame from %s: %v", n.name, p.name, err)
		return true, false, 0
	}
	if typ == frameDone {
		return true, false, 0
	}
	id, ops, err := decodeRange(payload)
	if err != nil || id != n.s.realm {
		n.s.fail("%s: range from %s: %v", n.name, p.name, err)
		return true, false, 0
	}
	res, err := n.applyPeer(ops, true)
	more, cut := judgeRange(err)
	if cut {
		n.s.fail("%s cuts honest %s off: %v", n.name, p.name, err)
	}
	if res != nil {
		k = len(res.Stored)
	}
	return false, more, k
}

// spread mirrors Node.spread: at most once a second, ask every member
// reached for its news, saying this node has some.
func (n *simNode) spread() {
	s := n.s
	if wait := n.spreadAt + simSpreadWait - s.now; wait > 0 {
		if !n.spreadOn {
			n.spreadOn = true
			life := n.life
			s.after(wait, func() {
				if n.life == life {
					n.spreadOn = false
					n.spread()
				}
			})
		}
		return
	}
	n.spreadAt = s.now
	for _, p := range s.nodes {
		if p != n && p.r != nil && s.linked(n, p) && n.isMember(p) {
			n.wantPull(p, true)
		}
	}
}

// simDisk is a node's datastore: writes are visible at once and durable
// once synced; a crash keeps what was synced and a random prefix of what
// was not, as a write-ahead log does.
type simDisk struct {
	batches []*crdt.Batch
	synced  int
	live    *crdt.MemStorage
}

func newSimDisk() *simDisk { return &simDisk{live: crdt.NewMemStorage()} }

func (d *simDisk) write(b *crdt.Batch) {
	d.live.Commit(b)
	d.batches = append(d.batches, b)
}

func (d *simDisk) sync() { d.synced = len(d.batches) }

func (d *simDisk) crash(rng *rand.Rand) int {
	kept := rng.IntN(len(d.batches) - d.synced + 1)
	d.batches = d.batches[:d.synced+kept]
	d.synced = len(d.batches)
	d.live = crdt.NewMemStorage()
	for _, b := range d.batches {
		d.live.Commit(b)
	}
	return kept
}

// simEvent is one thing due at a virtual time.
type simEvent struct {
	at  int64
	seq uint64
	fn  func()
}

type simQueue []*simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || q[i].at == q[j].at && q[i].seq < q[j].seq
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(*simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}
