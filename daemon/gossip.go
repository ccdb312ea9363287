package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/realmsync/realmsync/crdt"
)

// Gossip limits.
const (
	// queueDepth is the depth of pubsub's queues (per-peer outbound,
	// validation, subscription): at the default of 32 a burst of a
	// thousand ops loses some silently.
	queueDepth = 4096
	// maxGossipRPC bounds one pubsub RPC read from a peer.
	maxGossipRPC = 1 << 20
	// maxSubsPerRPC bounds the subscriptions one RPC may carry.
	maxSubsPerRPC = 1024
)

// topicPrefix starts the name of every realm topic.
const topicPrefix = "/rs/1/"

// topicName names a realm's topic: the prefix and the first 16 bytes of
// the realm id in unpadded base64url. The name travels in every gossip
// message, so it is kept short: the full id in hex would add 56 bytes to
// each op. 128 bits keep the names of distinct realms apart; the
// validator checks each op's full realm id all the same.
func topicName(id crdt.RealmID) string {
	return topicPrefix + base64.RawURLEncoding.EncodeToString(id[:16])
}

// newGossip starts the gossipsub router. Ops carry their own signatures,
// so pubsub signs nothing and names no author, and a message's id is the
// op's hash. Only members of a realm take part in its topic: the
// subscription filter drops anyone else's subscription, and the peer
// filter keeps them out of the mesh and of gossip.
func newGossip(ctx context.Context, h host.Host, n *Node) (*pubsub.PubSub, error) {
	opts := []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(opID),
		pubsub.WithSubscriptionFilter(memberFilter{n}),
		pubsub.WithPeerFilter(func(id peer.ID, topic string) bool {
			rp := n.byTopic(topic)
			return rp != nil && rp.isMember(id)
		}),
		// A node's own ops go to every member subscribed, not only to its
		// mesh peers: right after joining, the mesh is still empty, and a
		// realm's members are few.
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerOutboundQueueSize(queueDepth),
		pubsub.WithValidateQueueSize(queueDepth),
		pubsub.WithMaxMessageSize(maxGossipRPC),
		pubsub.WithLogger(n.log.With("component", "pubsub")),
	}
	ps, err := pubsub.NewGossipSub(ctx, h, append(opts, n.cfg.gossipOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("gossipsub: %w", err)
	}
	return ps, nil
}

// opID is the message id: the hash of the op the message carries.
func opID(m *pb.Message) string {
	h := sha256.Sum256(m.GetData())
	return string(h[:])
}

// memberFilter is the subscription filter: this node subscribes only to
// realm topics, and records a peer's subscription to a realm topic only
// when the peer is a member of that realm here. A realm whose genesis op
// has not arrived yet knows no members and has nothing to send: it takes
// every subscription, and once it knows its members it cuts off the peers
// that are not (replica.dropNonMembers).
type memberFilter struct{ n *Node }

func (f memberFilter) CanSubscribe(topic string) bool {
	return strings.HasPrefix(topic, topicPrefix)
}

func (f memberFilter) FilterIncomingSubscriptions(from peer.ID, subs []*pb.RPC_SubOpts) ([]*pb.RPC_SubOpts, error) {
	if len(subs) > maxSubsPerRPC {
		return nil, fmt.Errorf("%d subscriptions in one message", len(subs))
	}
	var out []*pb.RPC_SubOpts
	for _, s := range subs {
		if !s.GetSubscribe() {
			out = append(out, s) // leaving is always fine
			continue
		}
		rp := f.n.byTopic(s.GetTopicid())
		if rp != nil && (rp.isMember(from) || !rp.started.Load()) {
			out = append(out, s)
		}
	}
	return out, nil
}

// validate is the topic validator: it decodes the op and applies it, so
// that an op is checked (membership, role, signature, chain position)
// once per node, before pubsub passes it on.
func (rp *replica) validate(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == rp.n.host.ID() {
		return pubsub.ValidationAccept // our own op, applied before it was published
	}
	op, err := crdt.DecodeOp(m.GetData())
	if err != nil {
		rp.n.log.Debug("op rejected", "realm", rp.id, "peer", from, "err", err)
		return pubsub.ValidationReject
	}
	res, err := rp.apply([]*crdt.Op{op}, false)
	switch {
	case errors.Is(err, crdt.ErrPendingFull):
		return pubsub.ValidationIgnore
	case err != nil:
		rp.n.log.Info("op rejected", "realm", rp.id, "peer", from, "op", op, "err", err)
		return pubsub.ValidationReject
	case len(res.Stored) == 0 && res.Held == 0:
		return pubsub.ValidationIgnore // a duplicate: others have it too
	}
	if res.Held > 0 {
		rp.sawGap(from) // the sender has what comes before
	}
	return pubsub.ValidationAccept
}
