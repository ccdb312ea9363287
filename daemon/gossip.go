package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

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
const topicPrefix = "/rs/2/"

// topicName names a realm's topic: the prefix and the first 12 bytes of
// the realm id in unpadded base64url. The name travels in every gossip
// message, so it is kept short: the full id in hex would add 58 bytes to
// each op. Realm ids are hashes, so 96 bits keep the names of distinct
// realms apart (nobody can make a realm whose name matches a given
// one's); the validator checks each op's full realm id all the same.
func topicName(id crdt.RealmID) string {
	return topicPrefix + base64.RawURLEncoding.EncodeToString(id[:12])
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
		pubsub.WithPeerScore(scoreParams(), scoreThresholds()),
	}
	ps, err := pubsub.NewGossipSub(ctx, h, append(opts, n.cfg.gossipOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("gossipsub: %w", err)
	}
	return ps, nil
}

// Scoring. Pubsub keeps a score per peer; here it counts only the
// messages a peer sent that the validator rejected, which weigh by their
// square: a few are enough to go below the thresholds, and the count
// decays by a tenth each second.
//
//   - below gossipThreshold (-10): no gossip to or from the peer;
//   - below publishThreshold (-50): none of our own ops are sent to it;
//   - below graylistThreshold (-80): everything it sends is ignored.
func scoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		SkipAtomicValidation: true,
		Topics:               make(map[string]*pubsub.TopicScoreParams),
		AppSpecificScore:     func(peer.ID) float64 { return 0 },
		DecayInterval:        time.Second,
		DecayToZero:          0.01,
		RetainScore:          10 * time.Minute,
	}
}

func scoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		SkipAtomicValidation: true,
		GossipThreshold:      -10,
		PublishThreshold:     -50,
		GraylistThreshold:    -80,
	}
}

// topicScore is the score of a realm topic: rejected ops count against
// the peer that sent them.
func topicScore() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		SkipAtomicValidation:           true,
		TopicWeight:                    1,
		TimeInMeshQuantum:              time.Second, // weighs nothing; pubsub divides by it
		InvalidMessageDeliveriesWeight: -10,
		InvalidMessageDeliveriesDecay:  0.9,
	}
}

// opID is the message id: the hash of the group of ops the message
// carries, so that each group is checked once per node.
func opID(m *pb.Message) string {
	h := sha256.Sum256(m.GetData())
	return string(h[:])
}

// A gossip message carries one group: ops that continue one author's
// chain, of which the last is signed and vouches for the rest. A single
// op is sent as its own bytes, which begin with the op version (2); a
// group of two or more as each op's length as a uvarint, then its
// encoding. Every op is longer than 127 bytes, so a group's first byte has
// its high bit set and the two cannot be confused; nothing else is added,
// since every byte here is paid once per op and peer.

// encodeGroup encodes ops as a gossip message.
func encodeGroup(ops []*crdt.Op) []byte {
	if len(ops) == 1 {
		return ops[0].Bytes()
	}
	n := 0
	for _, op := range ops {
		n += binary.MaxVarintLen32 + len(op.Bytes())
	}
	b := make([]byte, 0, n)
	for _, op := range ops {
		b = binary.AppendUvarint(b, uint64(len(op.Bytes())))
		b = append(b, op.Bytes()...)
	}
	return b
}

// errGroup is the error for a gossip message that is not a well-formed
// group.
var errGroup = errors.New("bad gossip message")

// decodeGroup decodes a gossip message: at most crdt.MaxGroupOps ops, each
// at most crdt.MaxOpSize bytes, in at most maxGossipRPC bytes, lengths in
// their shortest form. It checks the encodings only; the realm checks the
// chain and the signature.
func decodeGroup(b []byte) ([]*crdt.Op, error) {
	if len(b) > maxGossipRPC {
		return nil, fmt.Errorf("%w: %d bytes", errGroup, len(b))
	}
	if len(b) > 0 && b[0] < 0x80 {
		op, err := crdt.DecodeOp(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errGroup, err)
		}
		return []*crdt.Op{op}, nil
	}
	var ops []*crdt.Op
	for len(b) > 0 {
		if len(ops) == crdt.MaxGroupOps {
			return nil, fmt.Errorf("%w: more than %d ops", errGroup, crdt.MaxGroupOps)
		}
		n, k := binary.Uvarint(b)
		if k <= 0 || k != len(binary.AppendUvarint(nil, n)) || n > crdt.MaxOpSize || n > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: op %d: bad length", errGroup, len(ops))
		}
		op, err := crdt.DecodeOp(b[k : k+int(n) : k+int(n)])
		if err != nil {
			return nil, fmt.Errorf("%w: op %d: %w", errGroup, len(ops), err)
		}
		ops, b = append(ops, op), b[k+int(n):]
	}
	if len(ops) < 2 {
		return nil, fmt.Errorf("%w: a group of %d ops", errGroup, len(ops))
	}
	return ops, nil
}

// memberFilter is the subscription filter: this node subscribes only to
// realm topics, and records a peer's subscription to a realm topic only
// when the peer is a member of that realm here. A realm whose genesis op
// has not arrived yet knows no members and has nothing to send: it takes
// every subscription, and once it knows its members it cuts off the peers
// that are not (replica.dropNonMembers).
type memberFilter struct{ n *Node }

// CanSubscribe lets this node subscribe to realm topics only.
func (f memberFilter) CanSubscribe(topic string) bool {
	return strings.HasPrefix(topic, topicPrefix)
}

// FilterIncomingSubscriptions keeps the subscriptions of members (and
// every leaving) and drops the rest.
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
		if rp != nil && rp.shares(from) {
			out = append(out, s)
		}
	}
	return out, nil
}

// validate is the topic validator: it decodes the group of ops and
// applies it, so that each op is checked (membership, role, signature,
// chain position) once per node, before pubsub passes it on.
//
// A peer that is not a member has no business in the topic: what it sends
// is rejected unread, which counts against it. An op that breaks the rules
// outright (bytes that do not decode, a bad signature, another realm, a
// broken chain) is rejected too. An op refused for its author's membership
// or role is only ignored: the grant or role change that allows it may
// simply not have arrived here yet, so catch-up is asked for it; the same
// goes for the second op of an equivocation, which an honest peer may have
// seen first.
func (rp *replica) validate(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == rp.n.host.ID() {
		return pubsub.ValidationAccept // our own op, applied before it was published
	}
	if !rp.started.Load() {
		return pubsub.ValidationIgnore // no genesis here yet: catch-up brings it
	}
	if !rp.isMember(from) {
		rp.n.log.Debug("op from a non-member rejected", "realm", rp.id, "peer", from)
		rp.n.metrics.rejected.WithLabelValues("sender_not_member").Inc()
		return pubsub.ValidationReject
	}
	ops, err := decodeGroup(m.GetData())
	if err != nil {
		rp.n.log.Info("op rejected", "realm", rp.id, "peer", from, "err", err)
		rp.n.metrics.rejected.WithLabelValues(rejectReason(err)).Inc()
		return pubsub.ValidationReject
	}
	op := ops[len(ops)-1]
	res, err := rp.apply(ops, false)
	if err != nil {
		rp.n.metrics.rejected.WithLabelValues(rejectReason(err)).Inc()
	}
	v := judgeGossip(res, err)
	switch {
	case v.pull:
		rp.n.log.Debug("op refused for now", "realm", rp.id, "peer", from, "op", op, "err", err)
		rp.n.wantPull(from) // at most one runs per peer; more asks coalesce
	case v.result == pubsub.ValidationReject:
		rp.n.log.Info("op rejected", "realm", rp.id, "peer", from, "op", op, "err", err)
	case v.gap:
		rp.sawGap(from) // the sender has what comes before
	}
	return v.result
}

// gossipVerdict is what a node makes of a gossip group it applied.
type gossipVerdict struct {
	result pubsub.ValidationResult // pass it on, ignore it or reject it
	pull   bool                    // ask the sender for catch-up
	gap    bool                    // it was held ahead of a gap
}

// judgeGossip judges a gossip group by what applying it gave.
func judgeGossip(res *crdt.Result, err error) gossipVerdict {
	var eq *crdt.Equivocation
	switch {
	case errors.Is(err, crdt.ErrPendingFull):
		return gossipVerdict{result: pubsub.ValidationIgnore}
	case errors.Is(err, crdt.ErrNotMember), errors.Is(err, crdt.ErrNotPermitted):
		return gossipVerdict{result: pubsub.ValidationIgnore, pull: true}
	case errors.As(err, &eq):
		return gossipVerdict{result: pubsub.ValidationIgnore}
	case err != nil:
		return gossipVerdict{result: pubsub.ValidationReject}
	case len(res.Stored) == 0 && res.Held == 0:
		return gossipVerdict{result: pubsub.ValidationIgnore} // a duplicate: others have it too
	}
	return gossipVerdict{result: pubsub.ValidationAccept, gap: res.Held > 0}
}
