package crdt

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
)

// Size limits of the op encoding. Decoders refuse anything larger before
// looking inside it.
const (
	// MaxOpSize is the largest encoded op, signature included.
	MaxOpSize = 64 << 10
	// MaxNameSize bounds realm names, display names, collection names,
	// object ids and field names.
	MaxNameSize = 256
	// MaxGroupOps and MaxGroupBytes bound a group: ops of one chain
	// written at once, of which only the last is signed (see Op.Signed).
	MaxGroupOps   = 256
	MaxGroupBytes = 256 << 10
	// MaxRangeOps and MaxRangeBytes bound a catch-up range (ApplyRange).
	MaxRangeOps   = 1024
	MaxRangeBytes = 2 << 20
)

// opVersion is the first byte of every encoded op. Version 2: the hash
// leaves the signature out, and ops may be unsigned within a group.
const opVersion = 2

// headerSize is the encoded size of everything before the body bytes.
const headerSize = 1 + 32 + 32 + 8 + 32 + 8 + 4 + 1 + 4

// SignatureSize is the size of the ed25519 signature that ends an op.
const SignatureSize = ed25519.SignatureSize

// signContext separates op signatures from anything else a node signs with
// the same key (offers, for one).
const signContext = "realmsync op v1\x00"

// Op is one signed change to one realm by one author.
//
// An Op returned by DecodeOp or Sign caches its encoding and hash; do not
// modify its fields afterwards.
type Op struct {
	Realm  RealmID // zero in a genesis op: the realm id is its hash
	Author PublicKey
	Seq    uint64 // position in the author's chain, from 1
	Prev   Hash   // hash of the author's op Seq-1; zero when Seq is 1
	Clock  Timestamp
	Epoch  uint32 // key epoch the body was written in
	Body   Body
	Sig    [SignatureSize]byte

	raw      []byte
	hash     Hash
	verified bool // Sig is known to be the author's
}

// Kind returns the kind of the op's body.
func (op *Op) Kind() Kind { return op.Body.Kind() }

// Stamp returns the op's position in realm order.
func (op *Op) Stamp() Stamp {
	return Stamp{Clock: op.Clock, Author: op.Author, Seq: op.Seq}
}

// Hash returns the SHA-256 of the op's encoding without its signature:
// the op's identity, which the next op of the chain links to. Leaving the
// signature out lets an op be signed after it is linked (see Signed).
func (op *Op) Hash() Hash { return op.hash }

// Signed reports whether the op carries a signature. An unsigned op (its
// signature all zero) is one of a group its author wrote at once: it is
// vouched for by the next signed op of its chain, whose signature covers
// it through the hash links, and travels only together with that op.
func (op *Op) Signed() bool { return op.Sig != [SignatureSize]byte{} }

// Bytes returns the op's canonical encoding. The caller must not modify it.
func (op *Op) Bytes() []byte { return op.raw }

// String summarises the op for logs and test failures; it never prints
// field values.
func (op *Op) String() string {
	return fmt.Sprintf("%s#%d %s @%s", op.Author.Short(), op.Seq, op.Kind(), op.Clock)
}

// appendHeader appends the op's header: everything before the body.
func (op *Op) appendHeader(w *writer) {
	w.u8(opVersion)
	w.hash(op.Realm)
	w.key(op.Author)
	w.u64(op.Seq)
	w.hash(op.Prev)
	w.u64(uint64(op.Clock))
	w.u32(op.Epoch)
}

// appendUnsigned appends everything the signature covers.
func (op *Op) appendUnsigned(dst []byte) []byte {
	w := writer{b: dst}
	op.appendHeader(&w)
	w.u8(uint8(op.Body.Kind()))
	lenAt := len(w.b)
	w.u32(0)
	op.Body.encode(&w)
	n := len(w.b) - lenAt - 4
	w.b[lenAt], w.b[lenAt+1], w.b[lenAt+2], w.b[lenAt+3] =
		byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return w.b
}

// Sign fills in the signature, encoding and hash of op, which must carry
// every other field already. priv must be the private key of op.Author.
func (op *Op) Sign(priv ed25519.PrivateKey) error {
	if err := op.encode(); err != nil {
		return err
	}
	op.sign(priv)
	return nil
}

// encode fills in the encoding and hash of op, unsigned.
func (op *Op) encode() error {
	raw := op.appendUnsigned(make([]byte, 0, headerSize+256+SignatureSize))
	if len(raw)+SignatureSize > MaxOpSize {
		return fmt.Errorf("sign op: %w: %d bytes", ErrTooLarge, len(raw)+SignatureSize)
	}
	op.hash = sha256.Sum256(raw)
	op.Sig, op.verified = [SignatureSize]byte{}, false
	op.raw = append(raw, op.Sig[:]...)
	return nil
}

// signed returns what the signature covers: a context, then the op's
// encoding without the signature.
func (op *Op) signed() []byte {
	n := len(op.raw) - SignatureSize
	return append(append(make([]byte, 0, len(signContext)+n), signContext...), op.raw[:n]...)
}

// sign signs an op that encode has filled in; its hash does not change.
func (op *Op) sign(priv ed25519.PrivateKey) {
	copy(op.Sig[:], ed25519.Sign(priv, op.signed()))
	copy(op.raw[len(op.raw)-SignatureSize:], op.Sig[:])
	op.verified = true
}

// VerifySignature checks op's signature against its author's key. An
// unsigned op fails it. The answer is kept: the check runs once per op.
func (op *Op) VerifySignature() error {
	switch {
	case op.verified:
		return nil
	case !op.Signed():
		return fmt.Errorf("op %s: %w: unsigned", op, ErrBadSignature)
	case !ed25519.Verify(op.Author[:], op.signed(), op.Sig[:]):
		return fmt.Errorf("op %s: %w", op, ErrBadSignature)
	}
	op.verified = true
	return nil
}

// vouches reports whether op's signature holds, so that it vouches for
// the ops before it in its chain.
func (op *Op) vouches() bool { return op.Signed() && op.VerifySignature() == nil }

// DecodeOp parses one encoded op. It checks the encoding only: the
// signature, chain and permissions are checked by the Realm that applies it.
// The op keeps a reference to b.
func DecodeOp(b []byte) (*Op, error) {
	if len(b) > MaxOpSize {
		return nil, fmt.Errorf("decode op: %w: %d bytes", ErrTooLarge, len(b))
	}
	r := reader{b: b}
	if v := r.u8(); r.err == nil && v != opVersion {
		return nil, fmt.Errorf("decode op: %w: version %d", ErrMalformed, v)
	}
	op := &Op{raw: b}
	op.Realm = r.hash()
	op.Author = r.key()
	op.Seq = r.u64()
	op.Prev = r.hash()
	op.Clock = Timestamp(r.u64())
	op.Epoch = r.u32()
	kind := Kind(r.u8())
	body := r.bytes()
	copy(op.Sig[:], r.take(SignatureSize, "signature"))
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("decode op: %w", err)
	}
	var err error
	if op.Body, err = decodeBody(kind, body); err != nil {
		return nil, fmt.Errorf("decode op: %w", err)
	}
	if err := op.checkShape(); err != nil {
		return nil, fmt.Errorf("decode op: %w", err)
	}
	op.hash = sha256.Sum256(b[:len(b)-SignatureSize])
	return op, nil
}

// checkShape checks the rules that need no realm state.
func (op *Op) checkShape() error {
	switch {
	case op.Seq == 0:
		return fmt.Errorf("%w: seq 0", ErrMalformed)
	case op.Seq == 1 && !op.Prev.IsZero():
		return fmt.Errorf("%w: first op names a previous op", ErrMalformed)
	case op.Seq > 1 && op.Prev.IsZero():
		return fmt.Errorf("%w: op %d names no previous op", ErrMalformed, op.Seq)
	}
	_, genesis := op.Body.(*Genesis)
	if genesis != op.Realm.IsZero() {
		return fmt.Errorf("%w: genesis ops and only they have no realm id", ErrMalformed)
	}
	if genesis && op.Seq != 1 {
		return fmt.Errorf("%w: genesis at seq %d", ErrMalformed, op.Seq)
	}
	return nil
}
