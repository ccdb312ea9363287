package invite

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/realmsync/realmsync/crdt"
)

// Limits of an offer. They keep a token short enough for a QR code that a
// phone reads at a glance, and bound what a decoder reads.
const (
	Version         = 1
	MaxNameSize     = 64   // bytes of the realm name
	MaxNodes        = 4    // nodes named, the issuer first
	MaxAddrsPerNode = 4    // addresses per node
	MaxAddrSize     = 64   // bytes of one binary multiaddr
	MaxOfferSize    = 1024 // bytes of a whole binary offer
)

// signContext separates offer signatures from every other signature made
// with a node key.
const signContext = "realmsync offer v1\x00"

// Errors of offers. Each has a stable code (see Code) that the API and
// CLI report.
var (
	ErrInvalidToken  = errors.New("not a realmsync offer")
	ErrBadSignature  = errors.New("the offer's signature does not match it")
	ErrExpired       = errors.New("the offer has expired")
	ErrUsedUp        = errors.New("the offer has no uses left")
	ErrRevoked       = errors.New("the offer was revoked")
	ErrNotPermitted  = errors.New("the issuer may not grant this")
	ErrAlreadyMember = errors.New("already a member of the realm")
	ErrUnreachable   = errors.New("no node named in the offer could be reached")
)

var codes = []struct {
	err  error
	code string
}{
	{ErrInvalidToken, "invalid_token"},
	{ErrBadSignature, "bad_signature"},
	{ErrExpired, "expired"},
	{ErrUsedUp, "used_up"},
	{ErrRevoked, "revoked"},
	{ErrNotPermitted, "not_permitted"},
	{ErrAlreadyMember, "already_member"},
	{ErrUnreachable, "unreachable"},
}

// Code returns the stable code of an offer error ("expired", say), or ""
// for an error that is none of them.
func Code(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

// ErrorOf returns the error of a code, or nil for an unknown one.
func ErrorOf(code string) error {
	for _, c := range codes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// Node is a node that can honour an offer, and where to dial it.
type Node struct {
	Key   crdt.PublicKey // its author key, which its peer id is made from
	Addrs []ma.Multiaddr // without a /p2p/ part
}

// Offer is an invitation to a realm: the PermissionOffer of Realm, signed
// by an admin of the realm, that any admin node holding the realm honours.
type Offer struct {
	Realm     crdt.RealmID
	RealmName string
	Role      crdt.Role
	ID        crdt.OfferID
	Issuer    crdt.PublicKey
	IssuedAt  time.Time // whole seconds
	ExpiresAt time.Time // whole seconds
	MaxUses   uint16    // at least 1

	// Nodes lists where to dial, the issuer first (its Key is Issuer).
	Nodes []Node

	Sig [ed25519.SignatureSize]byte
}

// check returns an error for an offer that could not be encoded.
func (o *Offer) check() error {
	switch {
	case len(o.RealmName) > MaxNameSize || !utf8.ValidString(o.RealmName):
		return fmt.Errorf("realm name: %d bytes, or not UTF-8", len(o.RealmName))
	case o.Role < crdt.RoleReader || o.Role > crdt.RoleAdmin:
		return fmt.Errorf("role %d", o.Role)
	case o.MaxUses == 0:
		return errors.New("max uses: 0")
	case len(o.Nodes) == 0 || len(o.Nodes) > MaxNodes:
		return fmt.Errorf("%d nodes, want 1 to %d", len(o.Nodes), MaxNodes)
	case o.Nodes[0].Key != o.Issuer:
		return errors.New("the first node is not the issuer")
	case !o.ExpiresAt.After(o.IssuedAt):
		return errors.New("expires before it is issued")
	}
	for _, n := range o.Nodes {
		if len(n.Addrs) == 0 || len(n.Addrs) > MaxAddrsPerNode {
			return fmt.Errorf("%d addresses for a node, want 1 to %d", len(n.Addrs), MaxAddrsPerNode)
		}
		for _, a := range n.Addrs {
			if len(a.Bytes()) > MaxAddrSize {
				return fmt.Errorf("address %s: longer than %d bytes", a, MaxAddrSize)
			}
		}
	}
	return nil
}

// appendUnsigned appends the offer's encoding up to its signature.
func (o *Offer) appendUnsigned(b []byte) []byte {
	b = append(b, Version)
	b = append(b, o.Realm[:]...)
	b = append(b, byte(len(o.RealmName)))
	b = append(b, o.RealmName...)
	b = append(b, byte(o.Role))
	b = append(b, o.ID[:]...)
	b = append(b, o.Issuer[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(o.IssuedAt.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(o.ExpiresAt.Unix()))
	b = binary.BigEndian.AppendUint16(b, o.MaxUses)
	b = append(b, byte(len(o.Nodes)))
	for i, n := range o.Nodes {
		if i > 0 {
			b = append(b, n.Key[:]...)
		}
		b = append(b, byte(len(n.Addrs)))
		for _, a := range n.Addrs {
			b = append(b, byte(len(a.Bytes())))
			b = append(b, a.Bytes()...)
		}
	}
	return b
}

// Sign fills in the signature with the issuer's key, after checking that
// the offer can be encoded. priv must be the key of o.Issuer.
func (o *Offer) Sign(priv ed25519.PrivateKey) error {
	if err := o.check(); err != nil {
		return fmt.Errorf("sign offer: %w", err)
	}
	if !slices.Equal(priv.Public().(ed25519.PublicKey), o.Issuer[:]) {
		return errors.New("sign offer: the key is not the issuer's")
	}
	msg := o.appendUnsigned([]byte(signContext))
	if len(msg)-len(signContext)+len(o.Sig) > MaxOfferSize {
		return fmt.Errorf("sign offer: %d bytes, more than %d", len(msg)-len(signContext)+len(o.Sig), MaxOfferSize)
	}
	copy(o.Sig[:], ed25519.Sign(priv, msg))
	return nil
}

// Verify checks the signature against the issuer's key.
func (o *Offer) Verify() error {
	msg := o.appendUnsigned([]byte(signContext))
	if !ed25519.Verify(o.Issuer[:], msg, o.Sig[:]) {
		return ErrBadSignature
	}
	return nil
}

// Marshal returns the offer's binary encoding, signature included.
func (o *Offer) Marshal() []byte {
	return append(o.appendUnsigned(nil), o.Sig[:]...)
}

// Unmarshal decodes a binary offer. It checks the shape, not the
// signature: call Verify.
func Unmarshal(b []byte) (*Offer, error) {
	if len(b) > MaxOfferSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalidToken, len(b))
	}
	r := reader{b: b}
	o := &Offer{}
	if v := r.byte(); v != Version {
		return nil, fmt.Errorf("%w: version %d", ErrInvalidToken, v)
	}
	r.fixed(o.Realm[:])
	o.RealmName = string(r.bytes(int(r.byte())))
	o.Role = crdt.Role(r.byte())
	r.fixed(o.ID[:])
	r.fixed(o.Issuer[:])
	o.IssuedAt = time.Unix(int64(r.uint64()), 0)
	o.ExpiresAt = time.Unix(int64(r.uint64()), 0)
	o.MaxUses = r.uint16()
	nodes := int(r.byte())
	if nodes > MaxNodes {
		return nil, fmt.Errorf("%w: %d nodes", ErrInvalidToken, nodes)
	}
	for i := range nodes {
		n := Node{Key: o.Issuer}
		if i > 0 {
			r.fixed(n.Key[:])
		}
		addrs := int(r.byte())
		if addrs > MaxAddrsPerNode {
			return nil, fmt.Errorf("%w: %d addresses", ErrInvalidToken, addrs)
		}
		for range addrs {
			raw := r.bytes(int(r.byte()))
			if r.err != nil {
				break
			}
			a, err := ma.NewMultiaddrBytes(raw)
			if err != nil {
				return nil, fmt.Errorf("%w: address: %v", ErrInvalidToken, err)
			}
			n.Addrs = append(n.Addrs, a)
		}
		o.Nodes = append(o.Nodes, n)
	}
	r.fixed(o.Sig[:])
	switch {
	case r.err != nil:
		return nil, fmt.Errorf("%w: truncated", ErrInvalidToken)
	case len(r.b) != 0:
		return nil, fmt.Errorf("%w: %d bytes after the signature", ErrInvalidToken, len(r.b))
	}
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return o, nil
}

// reader reads a binary offer; after a short read every read returns
// zeros and err is set.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = ErrInvalidToken
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) fixed(dst []byte) { copy(dst, r.bytes(len(dst))) }

func (r *reader) byte() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) uint16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) uint32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) uint64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}
