package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// addrsProtocol passes on where members can be reached.
//
// A node that joins a realm knows the addresses of the admins its offer
// named, and nobody else's: two members that joined through the same
// admin would reach each other only through that admin, and not at all
// while it is offline. So after catching up with a member (which it does
// on connecting and every few seconds), a node asks it, at most every
// addrsEvery, on a stream of this protocol, for the addresses of the
// other members it is connected to, of the realms the two share. The answer
// is one message: a big-endian uint16 count, then per member a uint16
// length and its peer id, and a uint16 length and its addresses as the
// address book stores them (encodePeerRecord). The asker puts the
// addresses of those that are members of its realms in its peerstore for
// an hour; the redial loop dials them, and once connected they are in
// the address book like any member. An answer over maxAddrsMessage, or
// that does not decode, is dropped whole. A member may name addresses
// that are not its fellows' (a dial there fails: the peer id is checked
// by the handshake), and only members' ids are dialed.
const (
	addrsProtocol   = "/realmsync/addrs/1"
	maxAddrsPeers   = 64       // members in one answer
	maxAddrsMessage = 64 << 10 // bytes of one answer
	addrsTimeout    = 10 * time.Second
	addrsTTL        = time.Hour
	addrsEvery      = 2 * time.Minute // asks of one peer, at most
)

var errAddrs = errors.New("bad member addresses")

// memberAddrs is one entry of an answer.
type memberAddrs struct {
	id    peer.ID
	addrs []ma.Multiaddr
}

func encodeAddrs(entries []memberAddrs) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(entries)))
	for _, e := range entries {
		id := []byte(e.id)
		b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
		b = append(b, id...)
		rec := encodePeerRecord(e.addrs)
		b = binary.BigEndian.AppendUint16(b, uint16(len(rec)))
		b = append(b, rec...)
	}
	return b
}

func decodeAddrs(b []byte) ([]memberAddrs, error) {
	if len(b) > maxAddrsMessage {
		return nil, fmt.Errorf("%w: %d bytes", errAddrs, len(b))
	}
	take := func() ([]byte, bool) {
		if len(b) < 2 {
			return nil, false
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, false
		}
		p := b[2 : 2+n]
		b = b[2+n:]
		return p, true
	}
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: truncated", errAddrs)
	}
	count := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if count > maxAddrsPeers {
		return nil, fmt.Errorf("%w: %d members", errAddrs, count)
	}
	out := make([]memberAddrs, 0, count)
	for range count {
		rawID, ok1 := take()
		rec, ok2 := take()
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: truncated", errAddrs)
		}
		id, err := peer.IDFromBytes(rawID)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errAddrs, err)
		}
		addrs, err := decodePeerRecord(rec)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errAddrs, err)
		}
		out = append(out, memberAddrs{id, addrs})
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errAddrs, len(b))
	}
	return out, nil
}

// serveAddrs answers a member with the addresses of the members of their
// shared realms that this node is connected to.
func (n *Node) serveAddrs(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(addrsTimeout))
	from := s.Conn().RemotePeer()
	seen := map[peer.ID]bool{from: true, n.host.ID(): true}
	var out []memberAddrs
	for _, rp := range n.replicas() {
		m := rp.members.Load()
		if m == nil || !rp.isMember(from) {
			continue
		}
		for id := range *m {
			if seen[id] || len(out) == maxAddrsPeers || n.host.Network().Connectedness(id) != network.Connected {
				continue
			}
			seen[id] = true
			var addrs []ma.Multiaddr
			for _, a := range n.host.Peerstore().Addrs(id) {
				if len(a.Bytes()) <= maxAddrLen && len(addrs) < maxAddrsPerPeer {
					addrs = append(addrs, a)
				}
			}
			if len(addrs) > 0 {
				out = append(out, memberAddrs{id, addrs})
			}
		}
	}
	if len(out) == 0 && !n.isMemberAnywhere(from) {
		s.Reset() // nothing for strangers, not even an empty answer
		return
	}
	s.Write(encodeAddrs(out))
}

// addrsDue asks id for addresses unless an answer with some came within
// addrsEvery.
func (n *Node) addrsDue(id peer.ID) {
	if !n.isMemberAnywhere(id) {
		return
	}
	n.addrsMu.Lock()
	now := time.Now()
	for p, at := range n.addrsAsked { // forget peers long gone
		if now.Sub(at) > addrsEvery {
			delete(n.addrsAsked, p)
		}
	}
	_, recent := n.addrsAsked[id]
	n.addrsMu.Unlock()
	if recent || !n.askAddrs(id) {
		return
	}
	n.addrsMu.Lock()
	if n.addrsAsked == nil {
		n.addrsAsked = make(map[peer.ID]time.Time)
	}
	n.addrsAsked[id] = now
	n.addrsMu.Unlock()
}

// askAddrs asks member id for its fellow members' addresses and keeps
// those of members of this node's realms; it reports whether it kept any
// (an empty answer is asked again at the next catch-up: members that
// join later may be there by then).
func (n *Node) askAddrs(id peer.ID) bool {
	ctx, cancel := context.WithTimeout(n.ctx, addrsTimeout)
	defer cancel()
	s, err := n.host.NewStream(ctx, id, addrsProtocol)
	if err != nil {
		n.log.Debug("member addresses not asked", "peer", id, "err", err) // an older node, or gone
		return false
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(addrsTimeout))
	s.CloseWrite()
	raw, err := io.ReadAll(io.LimitReader(s, maxAddrsMessage+1))
	if err != nil {
		n.log.Debug("member addresses not read", "peer", id, "err", err)
		return false
	}
	entries, err := decodeAddrs(raw)
	if err != nil {
		n.log.Info("member addresses refused", "peer", id, "err", err)
		s.Reset()
		return true // asked and answered, if badly: not again soon
	}
	kept := 0
	for _, e := range entries {
		if e.id != n.host.ID() && n.isMemberAnywhere(e.id) {
			n.host.Peerstore().AddAddrs(e.id, e.addrs, addrsTTL)
			kept++
		}
	}
	n.log.Debug("member addresses", "peer", id, "members", len(entries), "kept", kept)
	return kept > 0
}
