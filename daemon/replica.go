package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/realmsync/realmsync/crdt"
	"github.com/realmsync/realmsync/daemon/store"
)

// replica is one realm held by the node: the engine's Realm, which mu
// serialises, and the realm's gossip topic.
type replica struct {
	n  *Node
	id crdt.RealmID

	mu     sync.Mutex
	r      *crdt.Realm
	ring   *keyring      // the realm's epoch keys (keys.go)
	notify chan struct{} // closed and replaced at every change

	wmu     sync.Mutex
	writes  []*writeReq  // local writes waiting for mu (write.go)
	writing atomic.Int32 // local writes under way

	pmu        sync.Mutex
	pubq       []outgoing // local ops to publish, in chain order
	publishing bool       // a writer is publishing
	pubDue     bool       // an op became durable since the publisher looked

	topic   *pubsub.Topic
	sub     *pubsub.Subscription
	members atomic.Pointer[map[peer.ID]bool] // current members, for the filters
	started atomic.Bool                      // the genesis op is here
	gap     atomic.Pointer[gapSeen]          // the oldest gap not yet pulled
	durable atomic.Uint64                    // this node's newest op known to be on disk

	joinPulled time.Time     // the last pull for a realm not started; under mu
	keysAsked  time.Time     // the last ask for epoch keys (keyask.go); under mu
	keysWait   time.Duration // the least time between two asks; under mu
	keysAsking atomic.Bool   // an ask for epoch keys is under way
	created    time.Time     // when this node started holding the realm

	// The objects (chat messages aside) that changed lately, numbered,
	// for ObjectChanges; under mu.
	objLog []objChange
	objSeq uint64
}

// objChange is one entry of replica.objLog.
type objChange struct {
	seq uint64
	key crdt.ObjectKey
}

// objLogSize is how many object changes a replica remembers.
const objLogSize = 4096

// gapSeen records a gap in an author chain: an op from peer arrived ahead
// of the ops before it.
type gapSeen struct {
	from peer.ID
	at   time.Time
}

// gapWait is how long a gap may stay open before it is pulled by
// catch-up. Gossip often delivers out of order and fills most gaps by
// itself within milliseconds; a lost op leaves its gap open.
const gapWait = 200 * time.Millisecond

// addReplica joins the realm's topic and adds it to the node.
func (n *Node) addReplica(r *crdt.Realm) (*replica, error) {
	ring, err := n.loadKeys(r.ID())
	if err != nil {
		return nil, err
	}
	r.SetKeyring(ring)
	rp := &replica{n: n, id: r.ID(), r: r, ring: ring, notify: make(chan struct{}), created: time.Now()}
	rp.refreshMembers()
	rp.started.Store(r.HasGenesis())
	head, _ := r.Head(n.Author()) // what the store holds at open is on disk
	rp.durable.Store(head)
	name := topicName(r.ID())

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	if old := n.realms[r.ID()]; old != nil {
		n.mu.Unlock()
		return old, nil
	}
	n.realms[r.ID()], n.topics[name] = rp, rp
	n.mu.Unlock()

	// The validator does its work on the CPU (decode, verify, apply) and
	// waits for nothing but the realm's lock: run it in pubsub's
	// validation workers rather than in a goroutine per message.
	if err := n.ps.RegisterTopicValidator(name, rp.validate, pubsub.WithValidatorInline(true)); err != nil {
		return nil, fmt.Errorf("realm %s: validator: %w", r.ID(), err)
	}
	if rp.topic, err = n.ps.Join(name); err != nil {
		return nil, fmt.Errorf("realm %s: join topic: %w", r.ID(), err)
	}
	if err := rp.topic.SetScoreParams(topicScore()); err != nil {
		return nil, fmt.Errorf("realm %s: topic score: %w", r.ID(), err)
	}
	if rp.sub, err = rp.topic.Subscribe(pubsub.WithBufferSize(queueDepth)); err != nil {
		return nil, fmt.Errorf("realm %s: subscribe: %w", r.ID(), err)
	}
	n.spawn(rp.drain)
	return rp, nil
}

// drain empties the subscription: ops are applied by the validator, so
// what reaches here is already in the realm.
func (rp *replica) drain() {
	for {
		if _, err := rp.sub.Next(rp.n.ctx); err != nil {
			return
		}
	}
}

func (rp *replica) close() {
	if rp.sub != nil {
		rp.sub.Cancel()
	}
	if rp.topic != nil {
		rp.topic.Close()
	}
	rp.n.ps.UnregisterTopicValidator(topicName(rp.id))
}

// apply applies ops a peer sent, as a gossip group or a catch-up range. The
// batch is queued for the disk but not waited for: nobody is told these
// ops are durable, and a crash before the sync loses only what catch-up
// fetches again.
func (rp *replica) apply(ops []*crdt.Op, ranged bool) (*crdt.Result, error) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	b := crdt.NewBatch()
	res, err, everr := applyPeerOps(rp.r, b, ops, ranged, rp.n.nowMs())
	var eq *crdt.Equivocation
	if errors.As(err, &eq) {
		if everr != nil {
			rp.n.log.Warn("bad equivocation evidence", "realm", rp.id, "err", everr)
		}
		rp.n.log.Warn("equivocation", "realm", rp.id, "author", eq.Held.Author.Short(),
			"seq", eq.Held.Seq)
	}
	if _, qerr := rp.queueLocked(b); qerr != nil {
		return res, qerr
	}
	if res != nil {
		rp.changedLocked(res)
		source := "gossip"
		if ranged {
			source = "catchup"
		}
		rp.n.metrics.applied.WithLabelValues(source).Add(float64(len(res.Stored)))
		if f := rp.n.cfg.onApplied; f != nil && len(res.Stored) > 0 {
			f(res.Stored, ranged)
		}
	}
	return res, err
}

// applyPeerOps applies ops a peer sent to r, a catch-up range or a gossip
// group, staging the writes in b. When they reveal an equivocation, its
// evidence is applied too (evErr says if that failed), so that every
// replica freezes the chain at the same op.
func applyPeerOps(r *crdt.Realm, b *crdt.Batch, ops []*crdt.Op, ranged bool, nowMs int64) (res *crdt.Result, err, evErr error) {
	if ranged {
		res, err = r.ApplyRange(b, ops, nowMs)
	} else {
		res, err = r.ApplyGroup(b, ops, nowMs)
	}
	var eq *crdt.Equivocation
	if errors.As(err, &eq) {
		_, evErr = r.ApplyEvidence(b, eq)
	}
	return res, err, evErr
}

// tick releases held-back ops whose time has come, and pulls a gap that
// has stayed open for gapWait.
func (rp *replica) tick() {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	b := crdt.NewBatch()
	res := rp.r.Tick(b, rp.n.nowMs())
	if _, err := rp.queueLocked(b); err != nil {
		return
	}
	rp.changedLocked(res)
	rp.pullToJoinLocked()
	rp.wantKeysLocked()

	g := rp.gap.Load()
	if g == nil || time.Since(g.at) < gapWait {
		return
	}
	rp.gap.CompareAndSwap(g, nil)
	if len(rp.r.Missing()) > 0 {
		rp.n.wantPull(g.from)
	}
}

// joinPullEvery is how often a realm that has not received its genesis op
// yet asks every connected peer for it.
const joinPullEvery = time.Second

// pullToJoinLocked asks the connected peers for the realm's ops while the
// genesis op has not arrived: a node that was just admitted may be
// connected only to peers that are themselves still waiting for it. The
// caller holds rp.mu.
func (rp *replica) pullToJoinLocked() {
	if rp.started.Load() || time.Since(rp.joinPulled) < joinPullEvery {
		return
	}
	rp.joinPulled = time.Now()
	for _, id := range rp.n.host.Network().Peers() {
		rp.n.wantPull(id)
	}
}

// sawGap notes a gap that an op from a peer revealed, unless an older
// one waits already.
func (rp *replica) sawGap(from peer.ID) {
	rp.gap.CompareAndSwap(nil, &gapSeen{from: from, at: time.Now()})
}

// changedLocked tells waiters about a change and, when the membership
// changed, refreshes the filters and brings the realm's connections in
// line. The caller holds rp.mu.
func (rp *replica) changedLocked(res *crdt.Result) {
	if len(res.Stored) == 0 && !res.Members {
		return
	}
	close(rp.notify)
	rp.notify = make(chan struct{})
	for _, k := range res.Objects {
		if k.Collection != crdt.MessagesCollection {
			rp.objSeq++
			rp.objLog = append(rp.objLog, objChange{rp.objSeq, k})
		}
	}
	if len(rp.objLog) > objLogSize {
		rp.objLog = append(rp.objLog[:0], rp.objLog[len(rp.objLog)-objLogSize:]...)
	}
	rp.rotateAfterLeaveLocked(res)
	if res.Members {
		added, removed := rp.refreshMembers()
		rp.started.Store(rp.r.HasGenesis())
		rp.cutOffLocked(removed)
		rp.noticeLocked(removed, res)
		rp.n.spawn(func() { rp.reconcile(added) })
	}
}

// queueLocked hands the batch of an engine call to the store, with the
// epoch keys the keyring opened from the Epoch ops the call stored, so
// that a key is on disk exactly when its op is. An empty batch is not
// queued (nil, nil). A failed queue fails the node (storeFailed). The
// caller holds rp.mu.
func (rp *replica) queueLocked(b *crdt.Batch) (*store.Pending, error) {
	rp.ring.store(b)
	if b.Len() == 0 {
		return nil, nil
	}
	p, err := rp.n.st.Queue(b)
	if err != nil {
		return nil, rp.n.storeFailed(err)
	}
	return p, nil
}

func (rp *replica) changed() <-chan struct{} {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.notify
}

// refreshMembers rebuilds the member set the gossip filters read, and
// returns the peers that were not members before. The caller holds rp.mu
// (or has not published rp yet).
func (rp *replica) refreshMembers() (added, removed []peer.ID) {
	old := rp.members.Load()
	m := make(map[peer.ID]bool)
	for _, mem := range rp.r.Members() {
		id, err := peerOf(mem.Key)
		if err != nil {
			continue
		}
		m[id] = true
		if old != nil && !(*old)[id] {
			added = append(added, id)
		}
	}
	if old != nil {
		for id := range *old {
			if !m[id] {
				removed = append(removed, id)
			}
		}
	}
	rp.members.Store(&m)
	return added, removed
}

// cutOffLocked closes the connections of peers that stopped being members
// at once, before anything else is written or published: their
// subscription to the realm's topic goes with the connection, so not one
// more op is sent to them. A peer still a member of another realm held
// here is left to reconcile. The caller holds rp.mu.
func (rp *replica) cutOffLocked(removed []peer.ID) {
	n := rp.n
	for _, id := range removed {
		if id == n.host.ID() || n.isMemberAnywhere(id) ||
			n.host.Network().Connectedness(id) != network.Connected {
			continue
		}
		rp.drop(id)
	}
}

// noticeLocked sends each member removed by a revoke among res's ops a
// removal notice (removed.go). The caller holds rp.mu.
func (rp *replica) noticeLocked(removed []peer.ID, res *crdt.Result) {
	for _, id := range removed {
		key, ok := authorOf(id)
		if !ok || id == rp.n.host.ID() {
			continue
		}
		for _, op := range res.Stored {
			if rv, ok := op.Body.(*crdt.Revoke); ok && rv.Member == key && op.Author != key {
				rp.n.spawn(func() { rp.notifyRemoved(id, op) })
				break
			}
		}
	}
}

// drop closes the connections of a peer that is no longer a member of the
// realm, and stops protecting them unless it is a member of another realm
// held here.
func (rp *replica) drop(id peer.ID) {
	n := rp.n
	n.log.Info("peer left realm", "realm", rp.id, "peer", id)
	if !n.isMemberAnywhere(id) {
		n.cm.Unprotect(id, protectTag)
	}
	n.host.Network().ClosePeer(id)
}

func (rp *replica) isMember(id peer.ID) bool {
	m := rp.members.Load()
	return m != nil && (*m)[id]
}

// shares reports whether the realm is one to exchange with id: id is a
// member, or the realm's genesis op has not arrived, so that no member is
// known yet and any peer may be the one that brings it.
func (rp *replica) shares(id peer.ID) bool {
	return rp.isMember(id) || !rp.started.Load()
}

// resubscribeWait is how long a new member's subscription may take to
// show before its connection is made again.
const resubscribeWait = time.Second

// reconcile brings the realm's connections in line with its members after
// a change. A peer in the realm's topic that is no longer a member loses
// its connection: its subscription goes with it, and the subscription
// filter refuses it when it comes back. A connected member is protected
// from the connection manager and its addresses are remembered. A new
// member whose subscription this node refused while it was not a member
// yet gets a fresh connection, the only way to hear its subscription
// again: pubsub announces subscriptions once per connection.
func (rp *replica) reconcile(added []peer.ID) {
	n := rp.n
	if rp.topic == nil {
		return
	}
	inTopic := make(map[peer.ID]bool)
	for _, id := range rp.topic.ListPeers() {
		inTopic[id] = true
		if rp.isMember(id) {
			continue
		}
		rp.drop(id)
	}
	var late []peer.ID // connected before this node held the realm
	for _, id := range added {
		if id == n.host.ID() || n.host.Network().Connectedness(id) != network.Connected {
			continue
		}
		n.log.Info("peer joined realm", "realm", rp.id, "peer", id)
		n.cm.Protect(id, protectTag)
		n.remember(id)
		if !inTopic[id] && rp.connectedBefore(id) {
			late = append(late, id)
		}
	}
	// A peer connected before this node held the realm announced its
	// subscription to a topic this node did not have: it is lost for sure.
	// Another new member's may still be on its way: give it a moment.
	rp.reconnect(late)
	select {
	case <-n.ctx.Done():
		return
	case <-time.After(resubscribeWait):
	}
	for _, id := range rp.topic.ListPeers() {
		inTopic[id] = true
	}
	var missing []peer.ID
	for _, id := range added {
		if !inTopic[id] && !slices.Contains(late, id) && id != n.host.ID() &&
			n.host.Network().Connectedness(id) == network.Connected {
			missing = append(missing, id)
		}
	}
	rp.reconnect(missing)
}

// connectedBefore reports whether every connection to id is older than
// the replica.
func (rp *replica) connectedBefore(id peer.ID) bool {
	conns := rp.n.host.Network().ConnsToPeer(id)
	for _, c := range conns {
		if !c.Stat().Opened.Before(rp.created) {
			return false
		}
	}
	return len(conns) > 0
}

// reconnect closes the connections to peers and dials them again, so that
// both sides hear each other's subscriptions anew.
func (rp *replica) reconnect(ids []peer.ID) {
	for _, id := range ids {
		rp.n.log.Debug("reconnecting to hear a new member's subscription", "realm", rp.id, "peer", id)
		rp.n.host.Network().ClosePeer(id)
		rp.n.spawn(func() { rp.n.redial(id) })
	}
}

// storeFailed handles a failed commit: the realms in memory are now ahead
// of the disk, so the node refuses further work until it is restarted.
//
// TODO: reopen the store and the realms in place instead of giving up.
func (n *Node) storeFailed(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	n.log.Error("datastore failed; restart the daemon", "err", err)
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	return fmt.Errorf("%w: %w", store.ErrClosed, err)
}
