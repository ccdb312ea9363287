package crdt

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"
)

// ErrNoKey is returned by Write when the realm has a keyring but no key
// for its current epoch.
var ErrNoKey = errors.New("no key for the realm's key epoch")

// EpochKey is the symmetric key of one key epoch of a realm.
type EpochKey [chacha20poly1305.KeySize]byte

// RealmKey is one key of one epoch of a realm.
type RealmKey struct {
	Epoch uint32
	Key   EpochKey
}

// Keyring gives a realm the keys of its epochs. The caller keeps it: keys
// reach a node outside the engine's view (in the acceptance handshake, or
// sealed to the node in an Epoch op). The engine only reads it, under the
// same rule as the rest of the Realm: one call at a time.
//
// An epoch usually has one key. Two admins who start the same epoch at
// once, each unaware of the other, give it two; members receive both, and
// an op sealed with either opens.
type Keyring interface {
	// EpochKeys returns the keys of epoch n that this node has.
	EpochKeys(n uint32) []*EpochKey
}

// Sealed is a data body sealed with the key of the op's epoch: what the
// log and the wire carry, so that only members holding the key can read
// it. Its kind byte stays in the clear; so do the header and the
// signature, which any member checks.
type Sealed struct {
	Inner Kind                              // the kind of the sealed body
	Nonce [chacha20poly1305.NonceSizeX]byte // XChaCha20-Poly1305 nonce
	Box   []byte                            // the body's encoding, sealed
}

// Kind returns KindSealed; the sealed body's own kind is Inner.
func (*Sealed) Kind() Kind { return KindSealed }

func (b *Sealed) encode(w *writer) { w.u8(uint8(b.Inner)); w.fixed(b.Nonce[:]); w.bytes(b.Box) }

// EpochObserver is a Keyring that wants to hear of each Epoch op as it is
// stored, so that it can open the key sealed to its node at once: the ops
// that follow in the same call may be sealed with it.
type EpochObserver interface {
	EpochStarted(e *Epoch)
}

// A KeyChooser is a Keyring that picks the key Write seals with, given
// the boxes of the realm's current Epoch op (the one that counts, when
// two admins started the epoch): the key sealed there to this node, which
// every member that op knew of can open too. An epoch can have other keys
// (another admin's Epoch op of the same number, which a demotion may have
// voided, or a key fetched from a fellow member): sealing with one of
// those would leave some members unable to read the op. Without a
// KeyChooser, or when it returns nil, Write seals with the first key of
// the epoch.
type KeyChooser interface {
	SealingKey(epoch uint32, sealed []SealedKey) *EpochKey
}

// isData reports whether ops of kind k write objects: the kinds that are
// sealed.
func isData(k Kind) bool {
	switch k {
	case KindSet, KindDelete, KindCounter, KindSetAdd, KindSetRemove:
		return true
	}
	return false
}

// SetKeyring gives the realm its keys. With a keyring, Write seals data
// bodies with the current epoch's key, and sealed ops are applied once
// their epoch's key is here (until then they are held back, as ops ahead
// of a gap are). Without one, data bodies are written in the clear, and
// sealed ops wait.
func (r *Realm) SetKeyring(k Keyring) { r.ring = k }

// epochKeys returns the keys of epoch n that the realm's keyring has.
func (r *Realm) epochKeys(n uint32) []*EpochKey {
	if r.ring == nil {
		return nil
	}
	return r.ring.EpochKeys(n)
}

// locked reports whether op is sealed and none of the keys this replica
// has for its epoch opens it; when one does, it opens the op in place. An
// epoch may gain a key later (another admin's, which a later op of the
// same range or catch-up brings), so such an op waits rather than being
// refused.
func (r *Realm) locked(op *Op) bool {
	if _, ok := op.Body.(*Sealed); !ok {
		return false
	}
	return op.open(r.epochKeys(op.Epoch)) != nil
}

// sealedAD is the data the seal authenticates besides the body: the op's
// header and the sealed body's kind, so that a sealed body cannot be
// moved to another op.
func (op *Op) sealedAD(inner Kind) []byte {
	w := writer{}
	op.appendHeader(&w)
	w.u8(uint8(inner))
	return w.b
}

// seal replaces a data body with its sealed form. The nonce is derived
// from the key, the header and the body, so that the same op always seals
// the same way and two different ops never share a nonce.
func (op *Op) seal(key *EpochKey) error {
	inner := op.Body.Kind()
	w := writer{}
	op.Body.encode(&w)
	plain := w.b
	ad := op.sealedAD(inner)

	mac := hmac.New(sha256.New, key[:])
	mac.Write(ad)
	mac.Write(plain)
	sb := &Sealed{Inner: inner}
	copy(sb.Nonce[:], mac.Sum(nil))

	aead, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		return err
	}
	sb.Box = aead.Seal(nil, sb.Nonce[:], plain, ad)
	op.Body = sb
	return nil
}

// open replaces a sealed body with the body inside it, sealed with one of
// keys. The op keeps its encoding, hash and signature, which cover the
// sealed form.
func (op *Op) open(keys []*EpochKey) error {
	sb, ok := op.Body.(*Sealed)
	if !ok {
		return nil
	}
	plain := op.unseal(sb, keys)
	if plain == nil {
		return fmt.Errorf("op %s: %w: the sealed body does not open", op, ErrMalformed)
	}
	body, err := decodeBody(sb.Inner, plain)
	if err != nil {
		return fmt.Errorf("op %s: sealed body: %w", op, err)
	}
	if err := validateBody(body); err != nil {
		return fmt.Errorf("op %s: sealed body: %w", op, err)
	}
	op.Body = body
	return nil
}

// unseal returns the plain body inside sb, op's sealed body, under the
// first of keys that opens it, or nil if none does. It leaves op as it is.
func (op *Op) unseal(sb *Sealed, keys []*EpochKey) []byte {
	ad := op.sealedAD(sb.Inner)
	for _, key := range keys {
		aead, err := chacha20poly1305.NewX(key[:])
		if err != nil {
			continue // a key of the right size always makes one
		}
		if plain, err := aead.Open(nil, sb.Nonce[:], sb.Box, ad); err == nil {
			return plain
		}
	}
	return nil
}

// KeysWanted returns, in order, the key epochs of the ops held back
// because no key this replica has opens them, where such an op is next in
// its chain. Keys reach a member in the acceptance handshake and in the
// Epoch ops sealed to it; a member admitted while another admin, unaware
// of it, started an epoch gets that epoch's key from neither, and has to
// ask a fellow member for it (the daemon does). KeyOpens tells a key that
// came so from a made-up one.
func (r *Realm) KeysWanted() []uint32 {
	var out []uint32
	for _, op := range r.lockedHeads() {
		out = append(out, op.Epoch)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// KeyOpens reports whether key opens an op held back for want of a key of
// epoch n: whether some member sealed with it. (A member can seal its own
// ops with a key it made up, so that proves the key is of use, not that
// an Epoch op gave it.)
func (r *Realm) KeyOpens(n uint32, key *EpochKey) bool {
	for _, op := range r.lockedHeads() {
		if op.Epoch == n && op.unseal(op.Body.(*Sealed), []*EpochKey{key}) != nil {
			return true
		}
	}
	return false
}

// lockedHeads returns the held ops that are next in their chains and that
// no key this replica has opens.
func (r *Realm) lockedHeads() []*Op {
	var out []*Op
	for a, byseq := range r.pending {
		var have uint64
		if h := r.heads[a]; h != nil {
			have = h.seq
		}
		if next, ok := byseq[have+1]; ok && r.locked(next.op) {
			out = append(out, next.op)
		}
	}
	return out
}

// SealedTo returns the boxes that the stored Epoch ops of epoch n seal to
// member, one for each such op that has one.
func (r *Realm) SealedTo(n uint32, member PublicKey) [][]byte {
	var out [][]byte
	for _, op := range r.mship {
		if e, ok := op.Body.(*Epoch); ok && e.Number == n {
			for _, k := range e.Keys {
				if k.Member == member {
					out = append(out, k.Box)
				}
			}
		}
	}
	return out
}
