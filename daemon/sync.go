package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/realmsync/realmsync/crdt"
)

// protectTag marks connections to realm members in the connection
// manager, which never trims them.
const protectTag = "realm"

// syncProtocol is the catch-up protocol's id.
const syncProtocol = protocol.ID("/realmsync/sync/2")

// Catch-up timing.
const (
	syncIdle   = 15 * time.Second // longest wait for the next frame
	syncRounds = 3                // rounds in a row while ranges wait for a grant
)

// puller runs at most one catch-up per peer at a time; a request while one
// runs makes it go once more when it ends.
type puller struct {
	mu      sync.Mutex
	running map[peer.ID]*pullDue
}

// pullDue is what the requests for a peer's next round asked for.
type pullDue struct {
	again bool // another round is due
	push  bool // tell the peer this node has news (see spread)
}

// startSync registers the protocol and its triggers: a pull from each
// member that connects, and from every connected member each interval.
func (n *Node) startSync() {
	n.pulls.running = make(map[peer.ID]*pullDue)
	n.host.SetStreamHandler(syncProtocol, n.serveSync)
	n.host.SetStreamHandler(removedProtocol, n.serveRemoved)
	n.host.SetStreamHandler(addrsProtocol, n.serveAddrs)
	n.host.SetStreamHandler(keysProtocol, n.serveKeys)
	n.host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			if n.sharesRealm(c.RemotePeer()) {
				n.cm.Protect(c.RemotePeer(), protectTag)
				n.wantPull(c.RemotePeer())
			}
		},
	})
	n.wg.Go(n.syncLoop)
}

func (n *Node) syncLoop() {
	n.every(n.cfg.SyncInterval, func() {
		for _, id := range n.host.Network().Peers() {
			if n.sharesRealm(id) {
				n.wantPull(id)
			}
		}
	})
}

// sharesRealm reports whether id is a member of a realm held here, or
// this node holds a realm it has not received yet (and so knows no
// members of).
func (n *Node) sharesRealm(id peer.ID) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, rp := range n.realms {
		if rp.shares(id) {
			return true
		}
	}
	return false
}

// wantPull starts a catch-up from id, or asks the one running for another
// round.
func (n *Node) wantPull(id peer.ID) { n.requestPull(id, false) }

// pushTo is wantPull with news: the ask tells id that this node may be
// ahead of it, and id pulls from this node in turn if so.
func (n *Node) pushTo(id peer.ID) { n.requestPull(id, true) }

func (n *Node) requestPull(id peer.ID, push bool) {
	n.pulls.mu.Lock()
	defer n.pulls.mu.Unlock()
	if due := n.pulls.running[id]; due != nil {
		due.again, due.push = true, due.push || push
		return
	}
	due := &pullDue{push: push}
	n.pulls.running[id] = due
	n.spawn(func() {
		for {
			n.pulls.mu.Lock()
			push := due.push
			due.again, due.push = false, false
			n.pulls.mu.Unlock()

			if err := n.pull(n.ctx, id, push); err != nil && n.ctx.Err() == nil {
				n.log.Debug("catch-up failed", "peer", id, "err", err)
			}
			n.addrsDue(id)

			n.pulls.mu.Lock()
			if !due.again || n.ctx.Err() != nil {
				delete(n.pulls.running, id)
				n.pulls.mu.Unlock()
				return
			}
			n.pulls.mu.Unlock()
		}
	})
}

// pull runs catch-up rounds with id until nothing waits on a grant.
func (n *Node) pull(ctx context.Context, id peer.ID, push bool) error {
	for range syncRounds {
		again, err := n.pullOnce(ctx, id, push)
		if err != nil || !again {
			return err
		}
	}
	return nil
}

// pullOnce asks id for what this node lacks and applies what comes back.
// It reports whether some range was refused for want of a grant that
// another range brought, so that another round may take it.
func (n *Node) pullOnce(ctx context.Context, id peer.ID, push bool) (again bool, err error) {
	a := n.askFor(id)
	a.push = push
	if len(a.realms) == 0 {
		return false, nil
	}
	start := time.Now()
	s, err := n.host.NewStream(ctx, id, syncProtocol)
	if err != nil {
		return false, fmt.Errorf("open catch-up stream: %w", err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(syncIdle))
	w := bufio.NewWriter(s)
	if err := writeFrame(w, frameAsk, a.encode()); err != nil {
		return false, err
	}
	if err := w.Flush(); err != nil {
		return false, err
	}
	asked := make(map[crdt.RealmID]bool)
	for _, rv := range a.realms {
		asked[rv.id] = true
	}

	// One goroutine reads and decodes frames while this one applies the
	// ranges already decoded: the two halves overlap, and at most
	// rangesAhead frames wait in between.
	frames := make(chan rangeFrame, rangesAhead)
	stop := make(chan struct{})
	var reading sync.WaitGroup
	reading.Go(func() { readRanges(s, asked, frames, stop) })
	ended := false // the reader has seen the stream's end
	defer func() {
		close(stop)
		if !ended {
			s.Reset() // ends a read in progress
		}
		reading.Wait()
	}()

	applied := 0
	for f := range frames {
		if f.err != nil {
			if f.bad {
				return again, n.cutOff(s, id, f.err)
			}
			return again, fmt.Errorf("catch-up from %s: %w", id, f.err)
		}
		rp, err := n.replica(f.realm)
		if err != nil {
			return again, err
		}
		res, err := rp.apply(f.ops, true)
		more, cut := judgeRange(err)
		switch {
		case cut:
			return again, n.cutOff(s, id, err)
		case more:
			again = true
		case err != nil:
			n.log.Debug("catch-up range refused", "realm", f.realm, "peer", id, "err", err)
		}
		if res != nil {
			applied += len(res.Stored)
		}
	}
	ended = true
	if applied > 0 {
		n.metrics.caughtUp.Add(float64(applied))
		n.metrics.catchUp.Observe(time.Since(start).Seconds())
		n.log.Info("caught up", "peer", id, "ops", applied, "duration", time.Since(start))
		n.spread()
	}
	return again, nil
}

// judgeRange says what the error of applying a catch-up range means:
// again, that another round may take the range (the grant that admits its
// author may be in a range still to come); cut, that the peer broke the
// protocol and is cut off.
func judgeRange(err error) (again, cut bool) {
	switch {
	case errors.Is(err, crdt.ErrNotMember):
		return true, false
	case errors.Is(err, crdt.ErrBadSignature), errors.Is(err, crdt.ErrBrokenChain),
		errors.Is(err, crdt.ErrMalformed), errors.Is(err, crdt.ErrWrongRealm):
		return false, true
	}
	return false, false
}

// rangesAhead is how many decoded ranges may wait to be applied: with
// ranges of up to maxFrame bytes, it bounds what a catch-up holds in
// memory besides the range being applied.
const rangesAhead = 2

// rangeFrame is one decoded range frame, or the error that ended the
// stream; a stream that ends with its done frame ends without one.
type rangeFrame struct {
	realm crdt.RealmID
	ops   []*crdt.Op
	err   error
	bad   bool // err is the peer's fault: what it sent does not decode
}

// readRanges reads and decodes the range frames of a catch-up stream into
// frames, which it closes when the stream ends, fails, or stop is closed.
func readRanges(s network.Stream, asked map[crdt.RealmID]bool, frames chan<- rangeFrame, stop <-chan struct{}) {
	defer close(frames)
	r := bufio.NewReader(s)
	for {
		var f rangeFrame
		s.SetReadDeadline(time.Now().Add(syncIdle))
		typ, payload, err := readFrame(r)
		switch {
		case err != nil:
			f.err, f.bad = err, errors.Is(err, errFrame)
		case typ == frameDone:
			return
		case typ != frameRange:
			f.err, f.bad = fmt.Errorf("%w: type %d", errFrame, typ), true
		default:
			f.realm, f.ops, f.err = decodeRange(payload)
			if f.err == nil && !asked[f.realm] {
				f.err = fmt.Errorf("%w: a realm not asked for", errFrame)
			}
			f.bad = f.err != nil
		}
		select {
		case frames <- f:
		case <-stop:
			return
		}
		if f.err != nil {
			return
		}
	}
}

// spreadEvery is the least time between two spreads.
const spreadEvery = time.Second

// spread passes on what catch-up brought, which gossip does not: it asks
// the other connected members for their news, and each, seeing in the ask
// that this node is ahead of it, fetches what it lacks in turn. It runs
// at most once per spreadEvery: under a steady load gossip carries nearly
// everything, and periodic catch-up the rest. A spread asked for within
// the pause runs at its end, once.
func (n *Node) spread() {
	now := time.Now().UnixNano()
	last := n.spreadAt.Load()
	if wait := time.Duration(last + int64(spreadEvery) - now); wait > 0 {
		if n.spreadDue.CompareAndSwap(false, true) {
			n.spawn(func() {
				select {
				case <-n.ctx.Done():
				case <-time.After(wait):
					n.spreadDue.Store(false)
					n.spread()
				}
			})
		}
		return
	}
	if !n.spreadAt.CompareAndSwap(last, now) {
		return
	}
	for _, id := range n.host.Network().Peers() {
		if n.isMemberAnywhere(id) {
			n.pushTo(id)
		}
	}
}

// cutOff ends the exchange with a peer that broke the protocol.
func (n *Node) cutOff(s network.Stream, id peer.ID, err error) error {
	s.Reset()
	n.log.Warn("peer cut off: bad catch-up data", "peer", id, "err", err)
	n.host.Network().ClosePeer(id)
	return err
}

// askFor lists, for the realms id may serve, what this node holds.
func (n *Node) askFor(id peer.ID) *ask {
	a := &ask{}
	for _, rp := range n.replicas() {
		if !rp.shares(id) {
			continue
		}
		rp.mu.Lock()
		a.realms = append(a.realms, realmVV{id: rp.id, vv: rp.r.VersionVector()})
		rp.mu.Unlock()
	}
	return a
}

// serveSync answers an ask: for each realm the asker is a member of here,
// every op the asker lacks, author by author, in ranges.
func (n *Node) serveSync(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	s.SetDeadline(time.Now().Add(syncIdle))
	typ, payload, err := readFrame(bufio.NewReader(io.LimitReader(s, maxFrame+frameHeaderLength)))
	if errors.Is(err, errFrame) {
		n.cutOff(s, from, err)
		return
	}
	if err != nil {
		n.log.Debug("catch-up ask unread", "peer", from, "err", err)
		s.Reset()
		return
	}
	a, err := decodeAsk(payload)
	if err == nil && typ != frameAsk {
		err = fmt.Errorf("%w: type %d", errFrame, typ)
	}
	if err != nil {
		n.cutOff(s, from, err)
		return
	}
	w := bufio.NewWriter(s)
	sent := 0
	ahead := false
	for _, rv := range a.realms {
		rp, err := n.replica(rv.id)
		if err != nil || !rp.isMember(from) {
			continue // never say what realms are held to a non-member
		}
		ahead = ahead || a.push && rp.behind(rv.vv)
		k, err := rp.serve(w, rv.vv, func() { s.SetWriteDeadline(time.Now().Add(syncIdle)) })
		sent += k
		if err != nil {
			n.log.Debug("catch-up send failed", "peer", from, "err", err)
			s.Reset()
			return
		}
	}
	if err := writeFrame(w, frameDone, nil); err == nil {
		w.Flush()
	}
	if sent > 0 {
		n.log.Debug("catch-up served", "peer", from, "ops", sent)
	}
	if ahead {
		// The asker holds ops this node lacks: catch-up runs both ways.
		n.wantPull(from)
	}
}

// behind reports whether a version vector holds ops that this replica
// lacks.
func (rp *replica) behind(theirs map[crdt.PublicKey]uint64) bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	for a, seq := range theirs {
		if head, _ := rp.r.Head(a); seq > head {
			return true
		}
	}
	return false
}

// serve writes the ranges the asker lacks, given its version vector.
func (rp *replica) serve(w *bufio.Writer, theirs map[crdt.PublicKey]uint64, tick func()) (int, error) {
	return serveRealm(w, rp.r, &rp.mu, theirs, rp.n.Author(), rp.durable.Load(), tick)
}

// serveRealm writes the ranges of r that an asker with version vector
// theirs lacks; lock guards r's memory (the ops are read from the store
// unlocked). Of self's chain, this node's own, only ops up to durable are
// sent: a crash could undo the rest, and this node would then write other
// ops at those seqs. The creator's chain goes first: it holds the grants
// that admit the others.
func serveRealm(w *bufio.Writer, r *crdt.Realm, lock sync.Locker, theirs map[crdt.PublicKey]uint64,
	self crdt.PublicKey, durable uint64, tick func()) (int, error) {
	lock.Lock()
	mine := r.VersionVector()
	creator := r.Meta().Creator
	lock.Unlock()

	authors := make([]crdt.PublicKey, 0, len(mine))
	for a, head := range mine {
		if head > theirs[a] {
			authors = append(authors, a)
		}
	}
	slices.SortFunc(authors, func(x, y crdt.PublicKey) int {
		switch {
		case x == creator:
			return -1
		case y == creator:
			return 1
		}
		return bytes.Compare(x[:], y[:])
	})
	sent := 0
	for _, a := range authors {
		to := mine[a]
		if a == self {
			to = min(to, durable)
		}
		k, err := serveChain(w, r, a, theirs[a]+1, to, tick)
		sent += k
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// serveChain writes author's ops from seq from to seq to in ranges.
//
// A range ends only at an op whose signature holds, since that op vouches
// for the range (crdt.VouchedPrefix): a range that has reached its target
// size is closed at the next such op, which comes within a group
// (crdt.MaxGroupOps ops, crdt.MaxGroupBytes bytes), so no frame outgrows
// its limits. The unsigned ops at the end of a chain whose signed op is
// not here yet, and a chain whose author signed nothing it could end on,
// are not sent.
func serveChain(w *bufio.Writer, r *crdt.Realm, author crdt.PublicKey, from, to uint64, tick func()) (int, error) {
	var ops []*crdt.Op
	size, sent := 0, 0
	send := func(k int) error {
		tick()
		if err := writeFrame(w, frameRange, encodeRange(r.ID(), ops[:k])); err != nil {
			return err
		}
		sent += k
		ops = append(ops[:0], ops[k:]...)
		size = 0
		for _, op := range ops {
			size += len(op.Bytes())
		}
		return nil
	}
	var werr error
	// Ops reads the store only, so the realm stays unlocked.
	err := r.Ops(author, from, func(op *crdt.Op) bool {
		if op.Seq > to {
			return false
		}
		ops = append(ops, op)
		size += len(op.Bytes())
		full := len(ops) >= rangeTargetOps || size >= rangeTargetBytes
		switch {
		case full && op.Signed() && op.VerifySignature() == nil:
			werr = send(len(ops))
		case len(ops) >= maxOpsPerRange || size >= rangeTargetBytes+crdt.MaxGroupBytes:
			// No op to end on where one must be: send what is vouched
			// for and leave the rest of this chain.
			if k := crdt.VouchedPrefix(ops); k > 0 {
				werr = send(k)
			}
			return false
		}
		return werr == nil
	})
	if err = errors.Join(err, werr); err != nil {
		return sent, err
	}
	if k := crdt.VouchedPrefix(ops); k > 0 {
		return sent, send(k)
	}
	return sent, nil
}
