package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/realmsync/realmsync/crdt"
	"github.com/realmsync/realmsync/daemon/store"
	"github.com/realmsync/realmsync/invite"
)

// ErrNoRealm is returned for a realm this node does not hold.
var ErrNoRealm = errors.New("no such realm here")

// ErrClosed is returned by a Node that has been closed.
var ErrClosed = errors.New("node closed")

// tickInterval is how often held-back ops and open gaps are looked at.
const tickInterval = 250 * time.Millisecond

// Node is one running realmsync node: its libp2p host, its gossip router,
// its datastore and the realms it holds. Create it with New, stop it with
// Close. It is safe for concurrent use.
type Node struct {
	cfg     Config
	log     *slog.Logger
	lock    *os.File
	st      *store.Store
	priv    ed25519.PrivateKey
	metrics *metrics
	self    crdt.PublicKey
	host    host.Host
	cm      *connmgr.BasicConnMgr
	ps      *pubsub.PubSub

	mu     sync.RWMutex
	realms map[crdt.RealmID]*replica
	topics map[string]*replica // by topic name
	closed bool

	pulls     puller
	spreadAt  atomic.Int64 // unix ns of the last spread (sync.go)
	spreadDue atomic.Bool  // a spread waits for the pause to end
	book      book
	mdns      io.Closer // nil unless Config.MDNS

	addrsMu    sync.Mutex
	addrsAsked map[peer.ID]time.Time // when each peer was last asked (addrs.go)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens the node in cfg.DataDir (creating the dir, the node key and
// the datastore on first use), starts its host and gossip router, and
// joins the topics of the realms it holds.
func New(cfg Config) (n *Node, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	n = &Node{cfg: cfg, log: cfg.Logger,
		realms: make(map[crdt.RealmID]*replica), topics: make(map[string]*replica)}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	partial := n // the returns below set n to nil
	defer func() {
		if err != nil {
			partial.Close()
		}
	}()
	if n.lock, err = lockDir(cfg.DataDir); err != nil {
		return nil, err
	}
	key, err := loadKey(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if n.priv, err = signingKey(key); err != nil {
		return nil, err
	}
	copy(n.self[:], n.priv.Public().(ed25519.PublicKey))
	if n.st, err = store.Open(filepath.Join(cfg.DataDir, storeDir), cfg.Store); err != nil {
		return nil, err
	}
	if err := n.startNet(key); err != nil {
		return nil, err
	}
	if err := n.loadRealms(); err != nil {
		return nil, err
	}
	if err := n.loadBook(); err != nil {
		return nil, err
	}
	if err := n.watchPeers(); err != nil {
		return nil, err
	}
	n.startSync()
	n.host.SetStreamHandler(protocol.ID(invite.AcceptProtocol), n.serveAccept)
	n.wg.Go(n.redialLoop)
	if cfg.MDNS {
		if err := n.startMDNS(); err != nil {
			return nil, err
		}
	}
	n.wg.Go(n.tickLoop)
	n.log.Info("node started", "peer", n.host.ID(), "addrs", n.host.Addrs(), "realms", len(n.realms))
	return n, nil
}

// startNet starts the host and the gossip router.
func (n *Node) startNet(key crypto.PrivKey) error {
	var err error
	n.metrics = newMetrics(n.cfg.Metrics, n)
	if n.host, n.cm, err = newHost(n.cfg, key); err != nil {
		return err
	}
	n.ps, err = newGossip(n.ctx, n.host, n)
	return err
}

// loadRealms opens every realm in the store and joins its topic.
func (n *Node) loadRealms() error {
	ids, err := n.st.Realms()
	if err != nil {
		return err
	}
	for _, id := range ids {
		r, err := crdt.Open(n.st, id)
		if err != nil {
			return err
		}
		if _, err := n.addReplica(r); err != nil {
			return err
		}
	}
	return nil
}

// ID returns the node's peer id.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Author returns the node's author key in realms.
func (n *Node) Author() crdt.PublicKey { return n.self }

// Addrs returns the node's listen addresses, each ending in /p2p/<id>.
func (n *Node) Addrs() []ma.Multiaddr {
	addrs, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	return addrs
}

// Connect dials a peer.
func (n *Node) Connect(ctx context.Context, ai peer.AddrInfo) error {
	if err := n.host.Connect(ctx, ai); err != nil {
		return fmt.Errorf("connect %s: %w", ai.ID, err)
	}
	return nil
}

// CreateRealm creates a realm with this node as its first admin.
func (n *Node) CreateRealm(ctx context.Context, name string) (crdt.RealmID, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return crdt.RealmID{}, err
	}
	key, err := newEpochKey()
	if err != nil {
		return crdt.RealmID{}, err
	}
	b := crdt.NewBatch()
	r, _, err := crdt.Create(n.st, b, n.priv, name, n.cfg.Name, nonce, n.nowMs())
	if err != nil {
		return crdt.RealmID{}, err
	}
	b.Put(keyKey(r.ID(), crdt.RealmKey{Epoch: 0, Key: key}), key[:])
	if err := n.st.Commit(ctx, b); err != nil {
		return crdt.RealmID{}, err
	}
	if _, err := n.addReplica(r); err != nil {
		return crdt.RealmID{}, err
	}
	n.log.Info("realm created", "realm", r.ID())
	return r.ID(), nil
}

// JoinRealm starts holding a realm this node has been admitted to, with
// the epoch keys it was given; catch-up with its members brings its ops.
func (n *Node) JoinRealm(id crdt.RealmID, keys []crdt.RealmKey) error {
	if len(keys) > maxEpochs {
		return fmt.Errorf("join realm: %d keys", len(keys))
	}
	rp, err := n.replica(id)
	if errors.Is(err, ErrNoRealm) {
		var r *crdt.Realm
		if r, err = crdt.Open(n.st, id); err != nil {
			return err
		}
		rp, err = n.addReplica(r)
	}
	if err != nil {
		return err
	}
	b := crdt.NewBatch()
	rp.ring.put(b, id, keys)
	if err := n.st.Commit(n.ctx, b); err != nil {
		return n.storeFailed(err)
	}
	for _, p := range n.host.Network().Peers() {
		n.wantPull(p)
	}
	return nil
}

// Write makes body this node's next op in the realm and returns it once
// it is durably stored and handed to gossip for the realm's members.
func (n *Node) Write(ctx context.Context, id crdt.RealmID, body crdt.Body) (*crdt.Op, error) {
	rp, err := n.replica(id)
	if err != nil {
		return nil, err
	}
	return rp.write(ctx, body)
}

// ObjectChanges returns the objects (chat messages aside) whose state may
// have changed since the change numbered since, each once, and the number
// of the newest change. Pass math.MaxUint64 to learn that number with
// nothing else. Only the latest changes are kept: when those since were
// forgotten, it returns ErrChangesLost with the number to go on from.
func (n *Node) ObjectChanges(id crdt.RealmID, since uint64) ([]crdt.ObjectKey, uint64, error) {
	rp, err := n.replica(id)
	if err != nil {
		return nil, 0, err
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if since >= rp.objSeq {
		return nil, rp.objSeq, nil
	}
	if len(rp.objLog) == 0 || rp.objLog[0].seq > since+1 {
		return nil, rp.objSeq, ErrChangesLost
	}
	var keys []crdt.ObjectKey
	seen := make(map[crdt.ObjectKey]bool)
	for _, c := range rp.objLog {
		if c.seq > since && !seen[c.key] {
			seen[c.key] = true
			keys = append(keys, c.key)
		}
	}
	return keys, rp.objSeq, nil
}

// ErrChangesLost says that ObjectChanges no longer holds the changes asked
// for.
var ErrChangesLost = errors.New("object changes forgotten")

// Name returns the display name other members see.
func (n *Node) Name() string { return n.cfg.Name }

// Realms returns the ids of the realms this node holds, in no order.
func (n *Node) Realms() []crdt.RealmID {
	rps := n.replicas()
	ids := make([]crdt.RealmID, len(rps))
	for i, rp := range rps {
		ids[i] = rp.id
	}
	return ids
}

// Peers returns how many peers the node is connected to.
func (n *Node) Peers() int { return len(n.host.Network().Peers()) }

// Online reports whether the node is connected to the node of the member
// with key k (or is that node).
func (n *Node) Online(k crdt.PublicKey) bool {
	if k == n.Author() {
		return true
	}
	id, err := peerOf(k)
	return err == nil && n.host.Network().Connectedness(id) == network.Connected
}

// PeerID returns the peer id of a member's node.
func PeerID(k crdt.PublicKey) (peer.ID, error) { return peerOf(k) }

// MemberKey returns the member key of a peer id; false for a peer id that
// no realmsync node can have.
func MemberKey(id peer.ID) (crdt.PublicKey, bool) { return authorOf(id) }

// View calls fn with the realm, which it must only read, and must not
// keep past the call. Writes to the realm wait while fn runs.
func (n *Node) View(id crdt.RealmID, fn func(*crdt.Realm) error) error {
	rp, err := n.replica(id)
	if err != nil {
		return err
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return fn(rp.r)
}

// Changed returns a channel that is closed at the next change to the
// realm's state, from a local write or from a peer.
func (n *Node) Changed(id crdt.RealmID) (<-chan struct{}, error) {
	rp, err := n.replica(id)
	if err != nil {
		return nil, err
	}
	return rp.changed(), nil
}

func (n *Node) replica(id crdt.RealmID) (*replica, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return nil, ErrClosed
	}
	rp := n.realms[id]
	if rp == nil {
		return nil, fmt.Errorf("realm %s: %w", id, ErrNoRealm)
	}
	return rp, nil
}

// byTopic returns the replica of a topic, or nil.
func (n *Node) byTopic(topic string) *replica {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.topics[topic]
}

// spawn runs fn in a goroutine that Close waits for, unless the node is
// closing already.
func (n *Node) spawn(fn func()) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.closed {
		n.wg.Go(fn)
	}
}

func (n *Node) nowMs() int64 { return n.cfg.Now().UnixMilli() }

// tickLoop releases held-back ops whose time has come.
func (n *Node) tickLoop() {
	n.every(tickInterval, func() {
		for _, rp := range n.replicas() {
			rp.tick()
		}
	})
}

// every calls fn each period until the node closes.
func (n *Node) every(period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// replicas returns the realms held, in no order.
func (n *Node) replicas() []*replica {
	n.mu.RLock()
	defer n.mu.RUnlock()
	rps := make([]*replica, 0, len(n.realms))
	for _, rp := range n.realms {
		rps = append(rps, rp)
	}
	return rps
}

// Close stops the node: it leaves the realm topics, stops every goroutine,
// closes the host and the datastore (syncing what was acknowledged) and
// lets go of the data dir. Closing twice is not an error.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	rps := n.realms
	n.mu.Unlock()

	n.cancel()
	var errs []error
	if n.mdns != nil {
		errs = append(errs, n.mdns.Close())
	}
	for _, rp := range rps {
		rp.close()
	}
	n.wg.Wait()
	if n.host != nil {
		errs = append(errs, n.host.Close())
	}
	if n.st != nil {
		errs = append(errs, n.st.Close())
	}
	if n.lock != nil {
		errs = append(errs, n.lock.Close())
	}
	n.log.Info("node stopped")
	return errors.Join(errs...)
}
