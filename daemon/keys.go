package daemon

import (
	"bytes"
	"cmp"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/realmsync/realmsync/crdt"
	"github.com/realmsync/realmsync/invite"
)

// Epoch keys are local secrets: "keys/<realm>/<epoch>" holds the key of
// one epoch of a realm, as this node received it. They never enter the
// log in the clear; an Epoch op carries each new key sealed to each
// member.
const keysPrefix = "keys/"

// maxEpochs bounds the keys of one realm that a node keeps and hands over.
const maxEpochs = invite.MaxKeys

// keyring is a replica's epoch keys; it implements crdt.Keyring,
// crdt.EpochObserver and crdt.KeyChooser.
type keyring struct {
	realm crdt.RealmID
	self  crdt.PublicKey
	priv  ed25519.PrivateKey

	mu      sync.Mutex
	keys    map[uint32][]*crdt.EpochKey
	n       int
	fresh   []crdt.RealmKey // opened from Epoch ops, not stored yet
	fetched map[uint32]int  // keys of each epoch that came from a fellow member's answer (keyask.go)
	sealing struct {        // the last key SealingKey found, by its box
		box   string
		epoch uint32
		key   *crdt.EpochKey
	}
}

// EpochStarted opens the key of a new epoch sealed to this node, if there
// is one, and keeps it; the replica stores it after the engine call.
func (k *keyring) EpochStarted(e *crdt.Epoch) {
	for _, sk := range e.Keys {
		if sk.Member != k.self {
			continue
		}
		key, err := openKeyBox(k.priv, sk.Box, k.realm, e.Number)
		if err != nil {
			return // not for us after all; the op stays, without a key here
		}
		rk := crdt.RealmKey{Epoch: e.Number, Key: *key}
		k.mu.Lock()
		if k.add(rk) {
			k.fresh = append(k.fresh, rk)
		}
		k.mu.Unlock()
	}
}

// store puts the keys opened since the last call into a batch.
func (k *keyring) store(b *crdt.Batch) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, rk := range k.fresh {
		b.Put(keyKey(k.realm, rk), rk.Key[:])
	}
	k.fresh = nil
}

// EpochKeys returns the keys of epoch n held here.
func (k *keyring) EpochKeys(n uint32) []*crdt.EpochKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[n]
}

// SealingKey implements crdt.KeyChooser: the key that sealed, the boxes
// of the realm's current Epoch op, give this node, if it holds it. The
// box is opened once; the key is remembered by the box.
func (k *keyring) SealingKey(epoch uint32, sealed []crdt.SealedKey) *crdt.EpochKey {
	i := slices.IndexFunc(sealed, func(s crdt.SealedKey) bool { return s.Member == k.self })
	if i < 0 {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sealing.epoch == epoch && k.sealing.box == string(sealed[i].Box) { // no copy made
		return k.sealing.key
	}
	key, err := openKeyBox(k.priv, sealed[i].Box, k.realm, epoch)
	if err != nil || !slices.ContainsFunc(k.keys[epoch], func(have *crdt.EpochKey) bool { return *have == *key }) {
		return nil
	}
	k.sealing.box, k.sealing.epoch, k.sealing.key = string(sealed[i].Box), epoch, key
	return key
}

// all returns every key, in epoch order.
func (k *keyring) all() []crdt.RealmKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []crdt.RealmKey
	for n, keys := range k.keys {
		for _, key := range keys {
			out = append(out, crdt.RealmKey{Epoch: n, Key: *key})
		}
	}
	slices.SortFunc(out, compareKeys)
	return out
}

func compareKeys(x, y crdt.RealmKey) int {
	if x.Epoch != y.Epoch {
		return cmp.Compare(x.Epoch, y.Epoch)
	}
	return bytes.Compare(x.Key[:], y.Key[:])
}

// keyKey is where one key of one epoch is stored: the epoch, then a
// fingerprint of the key, which tells apart two keys of one epoch.
func keyKey(realm crdt.RealmID, k crdt.RealmKey) string {
	fp := sha256.Sum256(k.Key[:])
	return fmt.Sprintf("%s%s/%08x/%x", keysPrefix, realm, k.Epoch, fp[:8])
}

// add adds a key, unless it is there already; the caller holds k.mu.
func (k *keyring) add(rk crdt.RealmKey) bool {
	for _, have := range k.keys[rk.Epoch] {
		if *have == rk.Key {
			return false
		}
	}
	if k.n >= maxEpochs {
		return false
	}
	key := rk.Key
	k.keys[rk.Epoch] = append(k.keys[rk.Epoch], &key)
	k.n++
	return true
}

// loadKeys reads the stored keys of a realm.
func (n *Node) loadKeys(realm crdt.RealmID) (*keyring, error) {
	return loadKeyring(n.st, realm, n.self, n.priv)
}

// loadKeyring reads the realm's epoch keys from st into a keyring.
func loadKeyring(st crdt.Storage, realm crdt.RealmID, self crdt.PublicKey, priv ed25519.PrivateKey) (*keyring, error) {
	k := &keyring{realm: realm, self: self, priv: priv, keys: make(map[uint32][]*crdt.EpochKey),
		fetched: make(map[uint32]int)}
	prefix := keysPrefix + realm.String() + "/"
	var bad error
	err := st.Scan(prefix, "", func(key string, val []byte) bool {
		epoch, rest, _ := strings.Cut(key[len(prefix):], "/")
		num, err := strconv.ParseUint(epoch, 16, 32)
		if err != nil || len(val) != len(crdt.EpochKey{}) {
			bad = fmt.Errorf("stored key %s: malformed", key)
			return false
		}
		if k.add(crdt.RealmKey{Epoch: uint32(num), Key: crdt.EpochKey(val)}) && strings.HasSuffix(rest, fetchedMark) {
			k.fetched[uint32(num)]++
		}
		return true
	})
	if err = errors.Join(err, bad); err != nil {
		return nil, fmt.Errorf("load keys of realm %s: %w", realm, err)
	}
	return k, nil
}

// fetchedMark ends the storage key of a key that came from a fellow
// member's answer rather than from the handshake or an Epoch op.
const fetchedMark = "/fetched"

// putFetched adds keys that came from a fellow member's answer to the
// keyring, and to the batch that stores them, marked as such.
func (k *keyring) putFetched(b *crdt.Batch, realm crdt.RealmID, keys []crdt.RealmKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, rk := range keys {
		if k.add(rk) {
			k.fetched[rk.Epoch]++
			b.Put(keyKey(realm, rk)+fetchedMark, rk.Key[:])
		}
	}
}

// fetchedOf returns how many keys of epoch e came from fellow members'
// answers.
func (k *keyring) fetchedOf(e uint32) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetched[e]
}

// put adds keys to the keyring, and to the batch that stores them.
func (k *keyring) put(b *crdt.Batch, realm crdt.RealmID, keys []crdt.RealmKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, rk := range keys {
		if k.add(rk) {
			b.Put(keyKey(realm, rk), rk.Key[:])
		}
	}
}

// newEpochKey makes a fresh random key.
func newEpochKey() (crdt.EpochKey, error) {
	var k crdt.EpochKey
	_, err := rand.Read(k[:])
	return k, err
}

// x25519Private is the X25519 form of an ed25519 private key: the clamped
// scalar ed25519 signs with.
func x25519Private(priv ed25519.PrivateKey) (*ecdh.PrivateKey, error) {
	h := sha512.Sum512(priv.Seed())
	return ecdh.X25519().NewPrivateKey(h[:32])
}

// fieldPrime is 2^255 - 19.
var fieldPrime = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))

// x25519Public is the X25519 form of an ed25519 public key: the
// Montgomery u = (1 + y) / (1 - y) of the Edwards point.
func x25519Public(pub crdt.PublicKey) (*ecdh.PublicKey, error) {
	le := pub
	le[31] &= 0x7f // the sign of x
	be := slices.Clone(le[:])
	slices.Reverse(be)
	y := new(big.Int).SetBytes(be)
	one := big.NewInt(1)
	num := new(big.Int).Add(one, y)
	den := new(big.Int).Sub(one, y)
	den.Mod(den, fieldPrime)
	inv := new(big.Int).ModInverse(den, fieldPrime)
	if inv == nil {
		return nil, errors.New("x25519: not a usable public key")
	}
	u := num.Mul(num, inv)
	u.Mod(u, fieldPrime)
	out := u.FillBytes(make([]byte, 32))
	slices.Reverse(out)
	return ecdh.X25519().NewPublicKey(out)
}

// keyBoxContext binds a sealed epoch key to its use.
const keyBoxContext = "realmsync epoch key v1"

// boxKDF derives the key that seals one epoch key to one member.
func boxKDF(shared, eph, member []byte, realm crdt.RealmID, epoch uint32) ([]byte, error) {
	info := binary.BigEndian.AppendUint32(append([]byte(keyBoxContext), realm[:]...), epoch)
	return hkdf.Key(sha256.New, shared, append(slices.Clone(eph), member...), string(info), chacha20poly1305.KeySize)
}

// sealKeyTo seals an epoch key to a member: an ephemeral X25519 key, then
// the epoch key under XChaCha20-Poly1305 with a key derived from the two.
func sealKeyTo(member crdt.PublicKey, key *crdt.EpochKey, realm crdt.RealmID, epoch uint32) ([]byte, error) {
	to, err := x25519Public(member)
	if err != nil {
		return nil, err
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	shared, err := eph.ECDH(to)
	if err != nil {
		return nil, err
	}
	k, err := boxKDF(shared, eph.PublicKey().Bytes(), to.Bytes(), realm, epoch)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSizeX]byte // the key is used once
	return aead.Seal(eph.PublicKey().Bytes(), nonce[:], key[:], nil), nil
}

// openKeyBox opens an epoch key sealed to this node.
func openKeyBox(priv ed25519.PrivateKey, box []byte, realm crdt.RealmID, epoch uint32) (*crdt.EpochKey, error) {
	if len(box) != 32+len(crdt.EpochKey{})+chacha20poly1305.Overhead {
		return nil, errors.New("key box: wrong size")
	}
	me, err := x25519Private(priv)
	if err != nil {
		return nil, err
	}
	eph, err := ecdh.X25519().NewPublicKey(box[:32])
	if err != nil {
		return nil, err
	}
	shared, err := me.ECDH(eph)
	if err != nil {
		return nil, err
	}
	k, err := boxKDF(shared, box[:32], me.PublicKey().Bytes(), realm, epoch)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSizeX]byte
	plain, err := aead.Open(nil, nonce[:], box[32:], nil)
	if err != nil {
		return nil, errors.New("key box: does not open")
	}
	var ek crdt.EpochKey
	copy(ek[:], plain)
	return &ek, nil
}
