package daemon

import (
	"context"
	"runtime"

	"github.com/realmsync/realmsync/crdt"
	"github.com/realmsync/realmsync/daemon/store"
)

// writeReq is one local write on its way into the realm.
type writeReq struct {
	body  crdt.Body
	check func(*crdt.Realm) error // nil, or a condition the realm must meet

	// Set under replica.mu by whoever writes the request's group.
	written bool
	op      *crdt.Op
	err     error
	durable *store.Pending
}

// groupTarget is how many queued writes are worth a group of their own
// while the store syncs: enough that the signature costs little per op.
const groupTarget = 8

// outgoing is a group of local ops waiting to be published once it is
// durable: ops of the node's chain of which only the last is signed.
type outgoing struct {
	ops     []*crdt.Op
	durable *store.Pending
}

// write makes body the node's next op and returns it once it is durable
// and handed to gossip (see publishDurable).
//
// Writes combine: a writer queues its request, then takes the realm's
// lock, and whoever holds the lock writes every request queued by then
// as one group: one batch, one store write, one signature (on the
// group's last op, which vouches for the others; see crdt.Op.Signed) and
// one gossip message. Writers that were waiting for the lock find their
// op made and only wait for the shared sync. Under load this turns many
// small batches, each with its own lock hand-over, log append, signature
// and message, into few large ones; alone, a writer writes its own
// request at once.
func (rp *replica) write(ctx context.Context, body crdt.Body) (*crdt.Op, error) {
	return rp.writeIf(ctx, nil, body)
}

// writeIf is write, but only if check, called with the realm just before
// the op is made, returns nil; else it returns check's error and writes
// nothing. No other write comes between the check and the op.
func (rp *replica) writeIf(ctx context.Context, check func(*crdt.Realm) error, body crdt.Body) (*crdt.Op, error) {
	req := &writeReq{body: body, check: check}
	rp.wmu.Lock()
	rp.writes = append(rp.writes, req)
	queued := len(rp.writes)
	rp.wmu.Unlock()
	others := rp.writing.Add(1) > 1
	defer rp.writing.Add(-1)

	// Small groups waste signatures, so a write waits a little for others
	// to join its group, unless groupTarget writes are queued already.
	// While the disk syncs, a write could not join that sync anyway: it
	// waits for the sync to end. Otherwise, when other writes are under
	// way, it lets the writers that are ready to run (woken by the last
	// sync, say) queue theirs first; alone, it goes on at once.
	if queued < groupTarget {
		if ended := rp.n.st.Syncing(); ended != nil {
			select {
			case <-ended:
			case <-ctx.Done(): // the request is queued: write it, then give up
			}
		} else if others {
			runtime.Gosched()
		}
	}
	rp.mu.Lock()
	if !req.written {
		rp.writeQueuedLocked()
	}
	rp.mu.Unlock()

	if req.err != nil {
		return nil, req.err
	}
	if err := req.durable.Wait(ctx); err != nil {
		return nil, rp.n.storeFailed(err)
	}
	rp.publishDurable()
	return req.op, nil
}

// writeQueuedLocked writes every queued request into one batch, hands the
// batch to the store and the ops to the publisher. The caller holds rp.mu.
func (rp *replica) writeQueuedLocked() {
	rp.wmu.Lock()
	group := rp.writes
	rp.writes = nil
	rp.wmu.Unlock()

	b := crdt.NewBatch()
	total := &crdt.Result{}
	for _, req := range group {
		req.written = true
		if req.check != nil {
			if req.err = req.check(rp.r); req.err != nil {
				continue
			}
		}
		var res *crdt.Result
		req.op, res, req.err = rp.r.WriteUnsigned(b, rp.n.priv, req.body, rp.n.nowMs())
		if req.err == nil {
			total.Stored = append(total.Stored, res.Stored...)
			total.Objects = append(total.Objects, res.Objects...)
			total.Members = total.Members || res.Members
		}
	}
	rp.r.SignHead(b, rp.n.priv)
	p, err := rp.queueLocked(b)
	var out []outgoing
	var ops []*crdt.Op
	for _, req := range group {
		if req.err == nil {
			req.durable, req.err = p, err
			if ops = append(ops, req.op); req.op.Signed() {
				out = append(out, outgoing{ops, p})
				ops = nil
			}
		}
	}
	if err == nil {
		rp.enqueuePublish(out)
	}
	rp.changedLocked(total)
}

// enqueuePublish lines ops up for publishing, in chain order. The caller
// holds rp.mu.
func (rp *replica) enqueuePublish(out []outgoing) {
	rp.pmu.Lock()
	rp.pubq = append(rp.pubq, out...)
	rp.pmu.Unlock()
}

// publishDurable publishes the ops at the head of the line that are
// durable, in chain order: members never see an op that a crash could
// undo, and see one author's ops in order unless gossip reorders them.
//
// A writer calls it once its op is durable; whoever finds no other
// publisher at work publishes, in its own goroutine, everything durable
// by then, and a writer that finds one at work leaves its op to it. An
// op whose writer gave up waiting goes out with the next op written
// after it, or reaches the members by catch-up.
func (rp *replica) publishDurable() {
	rp.pmu.Lock()
	rp.pubDue = true
	if rp.publishing {
		rp.pmu.Unlock()
		return
	}
	rp.publishing = true
	for rp.pubDue {
		rp.pubDue = false
		k := 0
		for k < len(rp.pubq) && rp.pubq[k].durable.Done() {
			k++
		}
		ready := rp.pubq[:k:k]
		rp.pubq = rp.pubq[k:]
		rp.pmu.Unlock()
		for _, o := range ready {
			rp.durable.Store(o.ops[len(o.ops)-1].Seq)
			rp.publish(o.ops)
		}
		rp.pmu.Lock()
	}
	rp.publishing = false
	rp.pmu.Unlock()
}

func (rp *replica) publish(ops []*crdt.Op) {
	ctx := rp.n.ctx
	if len(rp.topic.ListPeers()) == 0 {
		// Nobody hears gossip here yet (a connection is new, say): let
		// catch-up carry the op.
		rp.n.spread()
	}
	rp.n.metrics.published.Add(float64(len(ops)))
	if err := rp.topic.Publish(ctx, encodeGroup(ops)); err != nil && ctx.Err() == nil {
		// Gossip may lose ops; catch-up brings these to the others.
		rp.n.log.Warn("publish failed", "realm", rp.id, "ops", len(ops), "last", ops[len(ops)-1], "err", err)
	}
}
