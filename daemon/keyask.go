package daemon

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/realmsync/realmsync/crdt"
)

// keysProtocol lets a member fetch from a fellow member the epoch keys it
// lacks.
//
// Keys reach a member in the acceptance response (every key the honouring
// admin has) and in the Epoch ops that start new epochs (sealed to each
// member the starting admin knows of). A member admitted while another
// admin, not yet aware of it, started an epoch gets that key from
// neither: its box is missing from the Epoch op, and the admin that
// admitted it did not have the key yet. Every op sealed in that epoch
// would wait on it for good, and with each such op the rest of its
// author's chain (its own grant, it may be, so that it cannot even tell
// it is a member). So a node whose replica holds ops back for want of a
// key (crdt.Realm.KeysWanted) asks its connected fellow members for the
// keys of those epochs, one member after the other; a round that brings
// none waits longer before the next (keysAskEvery, doubling up to
// keysAskMax).
//
// The ask is one message: a version byte, the realm id, a count and that
// many big-endian uint32 epoch numbers (at most maxKeysAsked). A node that
// holds the realm and counts the asker among its members answers with the
// keys of those epochs that it can vouch for: epoch 0's (which every
// member received when admitted), and those of later epochs that an
// Epoch op it holds sealed to it. It holds such an op only with the ops
// its admin wrote before it, the revocation it was started for among
// them, so a revoked member is refused wherever the new key could come
// from. (A member that left is refused once the node holds its leave; one
// that holds the Epoch op that followed the leave but not yet the leave
// itself would answer, a brief window.) The answer is the version byte, a
// big-endian uint16 count (at most maxKeysAnswer), and per key its epoch
// and its 32 bytes; anyone else gets no answer: the stream is reset. The
// keys travel over the libp2p connection, encrypted to the asker's peer
// key, as in the acceptance response.
//
// The asker keeps a key only if it opens an op it holds back
// (crdt.Realm.KeyOpens), and at most maxFetchedPerEpoch of them for an
// epoch: a rogue member can seal its own ops with made-up keys and hand
// those out, but not fill the keyring with them; and a node seals its own
// writes with the key its current Epoch op gives it (crdt.KeyChooser),
// not with a fetched one, when it has a box there.
const (
	keysProtocol   = "/realmsync/keys/1"
	keysVersion    = 1
	maxKeysAsked   = 16
	maxKeysAnswer  = 64
	maxKeysAskSize = 1 + len(crdt.RealmID{}) + 1 + 4*maxKeysAsked
	maxKeysSize    = 1 + 2 + maxKeysAnswer*(4+len(crdt.EpochKey{}))
	keysTimeout    = 10 * time.Second
	keysAskEvery   = 2 * time.Second
	keysAskMax     = 2 * time.Minute
	// maxFetchedPerEpoch bounds the keys of one epoch kept from asks.
	maxFetchedPerEpoch = 2
)

var errKeys = errors.New("bad key message")

// keyAsk is what a member asks for: keys of some epochs of one realm.
type keyAsk struct {
	realm  crdt.RealmID
	epochs []uint32
}

func (a *keyAsk) encode() []byte {
	b := append([]byte{keysVersion}, a.realm[:]...)
	b = append(b, byte(len(a.epochs)))
	for _, e := range a.epochs {
		b = binary.BigEndian.AppendUint32(b, e)
	}
	return b
}

func decodeKeyAsk(b []byte) (*keyAsk, error) {
	head := 1 + len(crdt.RealmID{}) + 1
	if len(b) < head || b[0] != keysVersion {
		return nil, fmt.Errorf("%w: ask too short or of another version", errKeys)
	}
	a := &keyAsk{}
	copy(a.realm[:], b[1:])
	count := int(b[head-1])
	if count == 0 || count > maxKeysAsked || len(b) != head+4*count {
		return nil, fmt.Errorf("%w: ask for %d epochs in %d bytes", errKeys, count, len(b))
	}
	for i := range count {
		a.epochs = append(a.epochs, binary.BigEndian.Uint32(b[head+4*i:]))
	}
	return a, nil
}

func encodeKeys(keys []crdt.RealmKey) []byte {
	b := binary.BigEndian.AppendUint16([]byte{keysVersion}, uint16(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, k.Epoch)
		b = append(b, k.Key[:]...)
	}
	return b
}

func decodeKeys(b []byte) ([]crdt.RealmKey, error) {
	const entry = 4 + len(crdt.EpochKey{})
	if len(b) < 3 || b[0] != keysVersion {
		return nil, fmt.Errorf("%w: answer too short or of another version", errKeys)
	}
	count := int(binary.BigEndian.Uint16(b[1:]))
	if count > maxKeysAnswer || len(b) != 3+entry*count {
		return nil, fmt.Errorf("%w: %d keys in %d bytes", errKeys, count, len(b))
	}
	keys := make([]crdt.RealmKey, count)
	for i := range keys {
		e := b[3+entry*i:]
		keys[i].Epoch = binary.BigEndian.Uint32(e)
		copy(keys[i].Key[:], e[4:entry])
	}
	return keys, nil
}

// serveKeys answers a member's ask for epoch keys.
func (n *Node) serveKeys(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(keysTimeout))
	from := s.Conn().RemotePeer()
	raw, err := io.ReadAll(io.LimitReader(s, int64(maxKeysAskSize)+1))
	if err != nil {
		s.Reset()
		return
	}
	a, err := decodeKeyAsk(raw)
	if err != nil {
		n.log.Debug("key ask refused", "peer", from, "err", err)
		s.Reset()
		return
	}
	rp, err := n.replica(a.realm)
	if err != nil || !rp.isMember(from) {
		s.Reset() // never say what realms are held to a non-member
		return
	}
	rp.mu.Lock()
	keys := answerKeys(rp.r, rp.ring, n.priv, a.epochs)
	rp.mu.Unlock()
	n.log.Debug("epoch keys handed to a member", "realm", a.realm, "peer", from, "epochs", a.epochs, "keys", len(keys))
	s.Write(encodeKeys(keys))
}

// answerKeys returns the keys of the epochs asked for that this node can
// vouch for (see keysProtocol), as many as an answer holds: epoch 0's
// that ring has, and those that Epoch ops r holds sealed to this node.
// The caller holds the lock of r.
func answerKeys(r *crdt.Realm, ring *keyring, priv ed25519.PrivateKey, epochs []uint32) []crdt.RealmKey {
	var keys []crdt.RealmKey
	for _, e := range epochs {
		var have []*crdt.EpochKey
		if e == 0 {
			have = ring.EpochKeys(0)
		} else {
			for _, box := range r.SealedTo(e, ring.self) {
				if k, err := openKeyBox(priv, box, r.ID(), e); err == nil {
					have = append(have, k)
				}
			}
		}
		for _, k := range have {
			if len(keys) < maxKeysAnswer && !slices.ContainsFunc(keys, func(x crdt.RealmKey) bool { return x.Epoch == e && x.Key == *k }) {
				keys = append(keys, crdt.RealmKey{Epoch: e, Key: *k})
			}
		}
	}
	return keys
}

// keysToKeep returns the keys of an answer that r can use and the keyring
// has room for: of an epoch asked for, opening an op r holds back, at
// most maxFetchedPerEpoch of an epoch in all. The caller holds the lock
// of r.
func keysToKeep(r *crdt.Realm, ring *keyring, keys []crdt.RealmKey, asked []uint32) []crdt.RealmKey {
	var out []crdt.RealmKey
	taken := make(map[uint32]int)
	for _, k := range keys {
		if !slices.Contains(asked, k.Epoch) || !r.KeyOpens(k.Epoch, &k.Key) ||
			ring.fetchedOf(k.Epoch)+taken[k.Epoch] >= maxFetchedPerEpoch {
			continue
		}
		taken[k.Epoch]++
		out = append(out, k)
	}
	return out
}

// wantKeysLocked starts asking the connected members for the keys the
// realm wants, unless an ask is under way or the last one was too recent.
// The caller holds rp.mu.
func (rp *replica) wantKeysLocked() {
	// Whether this node is a member is not asked: the grant that admits it
	// may itself wait behind an op it lacks the key of. The members it
	// asks decide.
	if time.Since(rp.keysAsked) < rp.keysWait {
		return
	}
	wanted := rp.r.KeysWanted()
	if len(wanted) == 0 || !rp.keysAsking.CompareAndSwap(false, true) {
		return
	}
	rp.keysAsked = time.Now()
	rp.n.spawn(func() {
		defer rp.keysAsking.Store(false)
		kept := rp.fetchKeys(wanted)
		rp.mu.Lock()
		if kept {
			rp.keysWait = keysAskEvery
		} else {
			rp.keysWait = min(max(2*rp.keysWait, keysAskEvery), keysAskMax)
		}
		rp.mu.Unlock()
	})
}

// fetchKeys asks the connected members, one after the other, for the keys
// of the wanted epochs, and keeps those it can use, until the realm wants
// none. It reports whether it kept any.
func (rp *replica) fetchKeys(wanted []uint32) bool {
	n := rp.n
	kept := false
	for _, id := range n.host.Network().Peers() {
		if len(wanted) == 0 || n.ctx.Err() != nil {
			break
		}
		if !rp.isMember(id) {
			continue
		}
		asked := wanted[:min(len(wanted), maxKeysAsked)]
		keys, err := n.askKeys(id, &keyAsk{realm: rp.id, epochs: asked})
		if err != nil {
			n.log.Debug("epoch keys not fetched", "realm", rp.id, "peer", id, "err", err)
			continue
		}
		b := crdt.NewBatch()
		rp.mu.Lock()
		keys = keysToKeep(rp.r, rp.ring, keys, asked)
		rp.ring.putFetched(b, rp.id, keys)
		rp.mu.Unlock()
		if b.Len() > 0 {
			if err := n.st.Commit(n.ctx, b); err != nil {
				n.storeFailed(err)
				return kept
			}
			kept = true
			n.log.Info("epoch keys fetched from a member", "realm", rp.id, "peer", id, "epochs", asked, "keys", len(keys))
			rp.tick() // the ops that waited for them
		}
		rp.mu.Lock()
		wanted = rp.r.KeysWanted()
		rp.mu.Unlock()
	}
	return kept
}

// askKeys asks member id for keys.
func (n *Node) askKeys(id peer.ID, a *keyAsk) ([]crdt.RealmKey, error) {
	ctx, cancel := context.WithTimeout(n.ctx, keysTimeout)
	defer cancel()
	s, err := n.host.NewStream(ctx, id, keysProtocol)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(keysTimeout))
	if _, err := s.Write(a.encode()); err != nil {
		s.Reset()
		return nil, err
	}
	s.CloseWrite()
	raw, err := io.ReadAll(io.LimitReader(s, int64(maxKeysSize)+1))
	if err != nil {
		return nil, err
	}
	keys, err := decodeKeys(raw)
	if err != nil {
		s.Reset()
		return nil, err
	}
	return keys, nil
}
