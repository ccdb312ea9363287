package daemon

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/realmsync/realmsync/crdt"
)

// SetRole gives a member of the realm a new role, from its next op on.
// Only an admin may; the engine refuses anyone else.
func (n *Node) SetRole(ctx context.Context, id crdt.RealmID, member crdt.PublicKey, role crdt.Role) error {
	if role < crdt.RoleReader || role > crdt.RoleAdmin {
		return fmt.Errorf("set role: %s: %w", role, crdt.ErrBadRole)
	}
	head, err := n.memberHead(id, member)
	if err != nil {
		return fmt.Errorf("set role: %w", err)
	}
	if _, err := n.Write(ctx, id, &crdt.ChangeRole{Member: member, Role: role, FromSeq: head + 1}); err != nil {
		return fmt.Errorf("set role: %w", err)
	}
	n.log.Info("role changed", "realm", id, "member", member.Short(), "role", role)
	return nil
}

// RemoveMember revokes a member of the realm. Its ops that this node holds
// stay valid; any later ones are void on every replica. Its connections
// to this node close, and it receives nothing written from now on.
func (n *Node) RemoveMember(ctx context.Context, id crdt.RealmID, member crdt.PublicKey) error {
	head, err := n.memberHead(id, member)
	if err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	if _, err := n.Write(ctx, id, &crdt.Revoke{Member: member, LastSeq: head}); err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	n.log.Info("member removed", "realm", id, "member", member.Short())
	if err := n.rotateKey(ctx, id); err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	return nil
}

// rotateAfterLeaveLocked has an admin node start a new key epoch when a
// member left by itself, as RemoveMember does when an admin removes one:
// the member who left holds the current key. Each admin node that sees
// the leave does so, after a pause in which it may see another admin's
// new epoch instead; two new keys for one epoch are harmless (see crdt's
// Keyring). The caller holds rp.mu.
func (rp *replica) rotateAfterLeaveLocked(res *crdt.Result) {
	n := rp.n
	left := false
	for _, op := range res.Stored {
		if _, ok := op.Body.(*crdt.Leave); ok && op.Author != n.self {
			left = true
		}
	}
	if !left || rp.r.Role(n.self) != crdt.RoleAdmin {
		return
	}
	epoch, _ := rp.r.KeyEpoch()
	n.spawn(func() {
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(leaveRotateWait + time.Duration(mrand.Int64N(int64(leaveRotateWait)))):
		}
		rp.mu.Lock()
		now, _ := rp.r.KeyEpoch()
		rp.mu.Unlock()
		if now != epoch {
			return // another admin started one already
		}
		if err := n.rotateKey(n.ctx, rp.id); err != nil && n.ctx.Err() == nil {
			n.log.Warn("new key epoch after a leave failed", "realm", rp.id, "err", err)
		}
	})
}

// leaveRotateWait is the least pause before an admin node starts a new
// key epoch after a member left; it waits up to twice as long.
const leaveRotateWait = 500 * time.Millisecond

// rotateKey starts a new key epoch: a fresh key, sealed to
// each member in an Epoch op, so that from now on data is written with a
// key that whoever left never had.
func (n *Node) rotateKey(ctx context.Context, id crdt.RealmID) error {
	rp, err := n.replica(id)
	if err != nil {
		return err
	}
	key, err := newEpochKey()
	if err != nil {
		return err
	}
	rp.mu.Lock()
	epoch, _ := rp.r.KeyEpoch()
	members := rp.r.Members()
	rp.mu.Unlock()
	next := epoch + 1
	body := &crdt.Epoch{Number: next}
	for _, m := range members { // sorted by key, as the op wants
		box, err := sealKeyTo(m.Key, &key, id, next)
		if err != nil {
			return fmt.Errorf("seal epoch key to %s: %w", m.Key.Short(), err)
		}
		body.Keys = append(body.Keys, crdt.SealedKey{Member: m.Key, Box: box})
	}
	// The key reaches this node's keyring as it reaches everyone's, by
	// its own box in the op, and is stored with the op: a key kept apart
	// from it would outlive a crash that lost the op, and a second try
	// would leave the epoch with a key nobody else ever gets, which this
	// node might seal with.
	if _, err := n.Write(ctx, id, body); err != nil {
		return fmt.Errorf("new key epoch: %w", err)
	}
	n.log.Info("key epoch started", "realm", id, "epoch", next, "members", len(members))
	return nil
}

// Leave ends this node's membership of the realm. The node keeps the realm
// (so that the others can fetch its leaving from it) but writes nothing
// more to it, its members stop sending it anything, and an admin node
// starts a new key epoch that it does not receive.
func (n *Node) Leave(ctx context.Context, id crdt.RealmID) error {
	if _, err := n.Write(ctx, id, &crdt.Leave{}); err != nil {
		return fmt.Errorf("leave realm: %w", err)
	}
	n.log.Info("left realm", "realm", id)
	return nil
}

// memberHead returns the head of a member's chain as held here, or an
// error if it is not a member.
func (n *Node) memberHead(id crdt.RealmID, member crdt.PublicKey) (uint64, error) {
	var head uint64
	err := n.View(id, func(r *crdt.Realm) error {
		if r.Role(member) == crdt.RoleNone {
			return fmt.Errorf("%s: %w", member.Short(), crdt.ErrNotMember)
		}
		head, _ = r.Head(member)
		return nil
	})
	return head, err
}
