package daemon

import (
	"bufio"
	"context"
	"errors"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/realmsync/realmsync/crdt"
)

// removedProtocol tells a removed member's node that it was removed.
//
// A removed member is cut off at once, before the revoke that removes it
// is even published, so gossip never brings it the revoke. Without it, the
// removed node would go on writing ops that nobody takes. So the node that
// cut it off dials it once more and sends one range frame (as catch-up
// does): the revoking admin's chain up to the revoke, ending at an op
// whose signature holds. The removed node applies it like a catch-up range
// from a member, and from then on refuses to write. Nothing else is sent:
// the range holds ops the removed member could have had as a member.
const removedProtocol = "/realmsync/removed/1"

// noticeOps is how many ops of the revoking chain a notice carries, at
// most: enough to bridge what the removed node missed just before.
const noticeOps = 256

// noticeTimeout bounds a notice: the wait for the revoke to be on disk,
// the dial and the write.
const noticeTimeout = 5 * time.Second

// notifyRemoved sends the notice to id, best effort.
func (rp *replica) notifyRemoved(id peer.ID, revoke *crdt.Op) {
	n := rp.n
	ctx, cancel := context.WithTimeout(n.ctx, noticeTimeout)
	defer cancel()
	if revoke.Author == n.Author() {
		// Only ops on disk leave the node (see serve).
		for rp.durable.Load() < revoke.Seq {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	var ops []*crdt.Op
	from := uint64(1)
	if revoke.Seq > noticeOps {
		from = revoke.Seq - noticeOps + 1
	}
	err := rp.r.Ops(revoke.Author, from, func(op *crdt.Op) bool {
		ops = append(ops, op)
		return op.Seq < revoke.Seq+crdt.MaxGroupOps && (op.Seq < revoke.Seq || !op.Signed())
	})
	ops = ops[:crdt.VouchedPrefix(ops)]
	if err != nil || len(ops) == 0 || ops[len(ops)-1].Seq < revoke.Seq {
		return
	}
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "notice"), id, removedProtocol)
	if err != nil {
		n.log.Debug("removal notice not sent", "realm", rp.id, "peer", id, "err", err)
		return
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(noticeTimeout))
	w := bufio.NewWriter(s)
	if writeFrame(w, frameRange, encodeRange(rp.id, ops)) == nil && w.Flush() == nil {
		s.CloseWrite()
		io.Copy(io.Discard, io.LimitReader(s, 1)) // wait for the reader to finish
	}
	if !n.isMemberAnywhere(id) {
		n.host.Network().ClosePeer(id)
	}
}

// serveRemoved takes a removal notice: one range from a member of the
// realm, checked and applied as a catch-up range is.
func (n *Node) serveRemoved(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	s.SetDeadline(time.Now().Add(noticeTimeout))
	typ, payload, err := readFrame(bufio.NewReader(io.LimitReader(s, maxFrame+frameHeaderLength)))
	if err == nil && typ != frameRange {
		err = errFrame
	}
	if err != nil {
		s.Reset()
		return
	}
	realm, ops, err := decodeRange(payload)
	if err != nil {
		s.Reset()
		return
	}
	rp, err := n.replica(realm)
	if err != nil || !rp.isMember(from) {
		s.Reset()
		return
	}
	if _, err := rp.apply(ops, true); err != nil && !errors.Is(err, crdt.ErrNotMember) {
		n.log.Debug("removal notice refused", "realm", realm, "peer", from, "err", err)
	}
}
