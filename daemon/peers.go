package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/realmsync/realmsync/crdt"
)

// The address book: where realm members were last reached, kept in the
// datastore under "peers/<peer id>" so that a restarted node dials its
// realms' members by itself.
const (
	peersPrefix     = "peers/"
	maxAddrsPerPeer = 16   // addresses kept per peer
	maxAddrLen      = 256  // bytes of one encoded multiaddr
	maxPeerRecord   = 4096 // bytes of one stored record
	peerRecordV1    = 1
)

// Redialing members that are not connected.
const (
	redialEvery = 2 * time.Second  // how often the book is looked at
	redialFirst = time.Second      // the wait after a first failed dial
	redialMax   = 5 * time.Minute  // the longest wait between dials
	dialTimeout = 10 * time.Second // one dial attempt
	wantMembers = 6                // members of a realm to keep connected, if there are
)

var errPeerRecord = errors.New("bad peer record")

// book is the node's memory of its members' addresses and dial attempts.
type book struct {
	mu      sync.Mutex
	written map[peer.ID]string       // the record last stored, encoded
	backoff map[peer.ID]*dialBackoff // members whose dials failed
}

type dialBackoff struct {
	next time.Time     // no dial before this
	wait time.Duration // the wait after the next failure
}

// encodePeerRecord encodes addresses as: version byte, count byte, then
// each address as a big-endian uint16 length and its binary multiaddr.
func encodePeerRecord(addrs []ma.Multiaddr) []byte {
	b := []byte{peerRecordV1, byte(len(addrs))}
	for _, a := range addrs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(a.Bytes())))
		b = append(b, a.Bytes()...)
	}
	return b
}

// decodePeerRecord parses a stored record.
func decodePeerRecord(b []byte) ([]ma.Multiaddr, error) {
	if len(b) > maxPeerRecord {
		return nil, fmt.Errorf("%w: %d bytes", errPeerRecord, len(b))
	}
	if len(b) < 2 || b[0] != peerRecordV1 {
		return nil, fmt.Errorf("%w: unknown version", errPeerRecord)
	}
	n := int(b[1])
	if n > maxAddrsPerPeer {
		return nil, fmt.Errorf("%w: %d addresses", errPeerRecord, n)
	}
	b = b[2:]
	addrs := make([]ma.Multiaddr, 0, n)
	for range n {
		if len(b) < 2 {
			return nil, fmt.Errorf("%w: truncated", errPeerRecord)
		}
		l := int(binary.BigEndian.Uint16(b))
		if l > maxAddrLen || l > len(b)-2 {
			return nil, fmt.Errorf("%w: address of %d bytes", errPeerRecord, l)
		}
		a, err := ma.NewMultiaddrBytes(b[2 : 2+l])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errPeerRecord, err)
		}
		addrs = append(addrs, a)
		b = b[2+l:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the addresses", errPeerRecord, len(b))
	}
	return addrs, nil
}

// loadBook puts the stored addresses of members into the peerstore.
func (n *Node) loadBook() error {
	n.book.written = make(map[peer.ID]string)
	n.book.backoff = make(map[peer.ID]*dialBackoff)
	return n.st.Scan(peersPrefix, "", func(key string, val []byte) bool {
		id, err := peer.Decode(key[len(peersPrefix):])
		if err != nil {
			n.log.Warn("address book: bad peer id", "key", key)
			return true
		}
		addrs, err := decodePeerRecord(val)
		if err != nil {
			n.log.Warn("address book: bad record", "peer", id, "err", err)
			return true
		}
		n.book.written[id] = string(val)
		n.host.Peerstore().AddAddrs(id, addrs, peerstore.PermanentAddrTTL)
		return true
	})
}

// remember stores where a member can be reached, if that changed: the
// addresses it listens on as it told us, and the one we dialed.
func (n *Node) remember(id peer.ID) {
	if id == n.host.ID() || !n.isMemberAnywhere(id) {
		return
	}
	var addrs []ma.Multiaddr
	for _, c := range n.host.Network().ConnsToPeer(id) {
		if c.Stat().Direction == network.DirOutbound {
			addrs = append(addrs, c.RemoteMultiaddr())
		}
	}
	for _, a := range n.host.Peerstore().Addrs(id) {
		if len(a.Bytes()) <= maxAddrLen && !slices.ContainsFunc(addrs, a.Equal) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return
	}
	addrs = addrs[:min(len(addrs), maxAddrsPerPeer)]
	rec := encodePeerRecord(addrs)

	n.book.mu.Lock()
	same := n.book.written[id] == string(rec)
	n.book.written[id] = string(rec)
	n.book.mu.Unlock()
	if same {
		return
	}
	b := crdt.NewBatch()
	b.Put(peersPrefix+id.String(), rec)
	if _, err := n.st.Queue(b); err != nil {
		n.storeFailed(err)
	}
}

// isMemberAnywhere reports whether id is a member of a realm held here.
func (n *Node) isMemberAnywhere(id peer.ID) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, rp := range n.realms {
		if rp.isMember(id) {
			return true
		}
	}
	return false
}

// watchPeers records members' addresses once identify has told them.
func (n *Node) watchPeers() error {
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return fmt.Errorf("watch peers: %w", err)
	}
	n.wg.Go(func() {
		defer sub.Close()
		for {
			select {
			case <-n.ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				id := e.(event.EvtPeerIdentificationCompleted).Peer
				n.remember(id)
			}
		}
	})
	return nil
}

// redialLoop dials members that are not connected (see redialDue), now
// and every redialEvery, each with its own backoff.
func (n *Node) redialLoop() {
	n.redialDue()
	n.every(redialEvery, n.redialDue)
}

// redialDue dials, for each realm with fewer than wantMembers of its
// members connected, as many more as it lacks (whose addresses are known
// and whose backoff allows). A realm needs a few of its members, not all:
// gossip reaches the rest through them, and every connection costs each
// op a copy.
func (n *Node) redialDue() {
	dialing := make(map[peer.ID]bool)
	for _, rp := range n.replicas() {
		m := rp.members.Load()
		if m == nil {
			continue
		}
		connected := 0
		var candidates []peer.ID
		for id := range *m {
			switch {
			case id == n.host.ID():
			case n.host.Network().Connectedness(id) == network.Connected || dialing[id]:
				connected++
			case len(n.host.Peerstore().Addrs(id)) > 0:
				candidates = append(candidates, id)
			}
		}
		for _, id := range candidates {
			if connected >= wantMembers {
				break
			}
			if n.dueForDial(id) {
				dialing[id] = true
				connected++
				n.spawn(func() { n.redial(id) })
			}
		}
	}
}

// dueForDial reports whether id's backoff allows a dial now, and if so
// sets the next one.
func (n *Node) dueForDial(id peer.ID) bool {
	n.book.mu.Lock()
	defer n.book.mu.Unlock()
	bo := n.book.backoff[id]
	if bo == nil {
		bo = &dialBackoff{wait: redialFirst}
		n.book.backoff[id] = bo
	}
	now := time.Now()
	if now.Before(bo.next) {
		return false
	}
	// Set for the failure case; a success clears it.
	bo.next = now.Add(dialTimeout + bo.wait)
	bo.wait = min(2*bo.wait, redialMax)
	return true
}

func (n *Node) redial(id peer.ID) {
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	defer cancel()
	err := n.host.Connect(ctx, peer.AddrInfo{ID: id})
	if err != nil {
		n.log.Debug("redial failed", "peer", id, "err", err)
		return
	}
	n.book.mu.Lock()
	delete(n.book.backoff, id)
	n.book.mu.Unlock()
	n.log.Info("reconnected to member", "peer", id)
}
