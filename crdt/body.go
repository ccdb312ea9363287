package crdt

import (
	"bytes"
	"fmt"
)

// Kind says what an op does. New kinds may be added by newer nodes: an op
// of a kind this node does not know is decoded as *Unknown, kept in its
// author's chain and passed on, and has no effect on state here.
type Kind uint8

// The op kinds this version knows.
const (
	KindGenesis     Kind = 1  // creates the realm
	KindSet         Kind = 2  // sets fields of an object
	KindDelete      Kind = 3  // deletes an object
	KindCounter     Kind = 4  // adds to a counter field
	KindSetAdd      Kind = 5  // adds an element to a set field
	KindSetRemove   Kind = 6  // removes observed elements from a set field
	KindGrant       Kind = 7  // admits a member with a role
	KindRole        Kind = 8  // changes a member's role
	KindRevoke      Kind = 9  // removes a member
	KindLeave       Kind = 10 // the author leaves
	KindRevokeOffer Kind = 11 // kills an offer
	KindRedeem      Kind = 12 // records one use of an offer
	KindEpoch       Kind = 13 // starts a new key epoch
	KindSealed      Kind = 14 // a data body sealed with the epoch key
)

var kindNames = map[Kind]string{
	KindGenesis: "genesis", KindSet: "set", KindDelete: "delete",
	KindCounter: "counter", KindSetAdd: "setadd", KindSetRemove: "setremove",
	KindGrant: "grant", KindRole: "role", KindRevoke: "revoke",
	KindLeave: "leave", KindRevokeOffer: "revokeoffer", KindRedeem: "redeem",
	KindEpoch: "epoch", KindSealed: "sealed",
}

// String returns the kind's name.
func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Body is the kind-specific part of an op.
type Body interface {
	Kind() Kind
	encode(w *writer)
}

// Genesis creates a realm and makes its author the first admin.
type Genesis struct {
	Name       string   // the realm's name
	AuthorName string   // the creator's display name
	Nonce      [16]byte // random, so equal names give distinct realms
}

// Set sets fields of an object; fields it does not name keep their values.
type Set struct {
	Collection, ID string
	Fields         []Field // sorted by name, names unique
}

// Field is one named value. Values are opaque to the engine (the API keeps
// JSON in them).
type Field struct {
	Name  string
	Value []byte
}

// Delete deletes an object. A later write brings it back, empty but for
// what that write sets.
type Delete struct{ Collection, ID string }

// Counter adds Delta to a counter field.
type Counter struct {
	Collection, ID, Field string
	Delta                 int64
}

// SetAdd adds Elem to a set field. The op's own hash tags this addition.
type SetAdd struct {
	Collection, ID, Field string
	Elem                  []byte
}

// SetRemove removes the additions of Elem that the author had seen, named
// by the hashes of their SetAdd ops. Additions it did not see survive:
// sets are add-wins.
type SetRemove struct {
	Collection, ID, Field string
	Elem                  []byte
	Tags                  []Hash // sorted, unique
}

// Grant admits Member with Role. FromSeq is the first seq of the member's
// chain the grant covers: 1 for a newcomer. Offer, when not zero, is the
// offer the member redeemed; the grant then also counts as one use of it.
type Grant struct {
	Member  PublicKey
	Role    Role
	FromSeq uint64
	Name    string
	Offer   OfferID
}

// ChangeRole gives Member a new role from FromSeq of its chain on.
type ChangeRole struct {
	Member  PublicKey
	Role    Role
	FromSeq uint64
}

// Revoke removes Member. Its ops up to LastSeq stay valid; later ones are
// void on every replica.
type Revoke struct {
	Member  PublicKey
	LastSeq uint64
}

// Leave removes its own author from the realm.
type Leave struct{}

// RevokeOffer stops an offer from admitting anyone else.
type RevokeOffer struct{ Offer OfferID }

// Redeem records one use of an offer by Member.
type Redeem struct {
	Offer  OfferID
	Member PublicKey
}

// Epoch starts key epoch Number. Keys holds the epoch key sealed to each
// remaining member; the engine stores them without looking inside.
type Epoch struct {
	Number uint32
	Keys   []SealedKey // sorted by member, unique
}

// SealedKey is an epoch key sealed to one member.
type SealedKey struct {
	Member PublicKey
	Box    []byte
}

// Unknown is the body of an op whose kind this node does not know.
type Unknown struct {
	K   Kind
	Raw []byte
}

func (*Genesis) Kind() Kind     { return KindGenesis }
func (*Set) Kind() Kind         { return KindSet }
func (*Delete) Kind() Kind      { return KindDelete }
func (*Counter) Kind() Kind     { return KindCounter }
func (*SetAdd) Kind() Kind      { return KindSetAdd }
func (*SetRemove) Kind() Kind   { return KindSetRemove }
func (*Grant) Kind() Kind       { return KindGrant }
func (*ChangeRole) Kind() Kind  { return KindRole }
func (*Revoke) Kind() Kind      { return KindRevoke }
func (*Leave) Kind() Kind       { return KindLeave }
func (*RevokeOffer) Kind() Kind { return KindRevokeOffer }
func (*Redeem) Kind() Kind      { return KindRedeem }
func (*Epoch) Kind() Kind       { return KindEpoch }
func (u *Unknown) Kind() Kind   { return u.K }

func (b *Genesis) encode(w *writer) { w.str(b.Name); w.str(b.AuthorName); w.fixed(b.Nonce[:]) }
func (b *Delete) encode(w *writer)  { w.str(b.Collection); w.str(b.ID) }
func (b *Leave) encode(*writer)     {}
func (b *Unknown) encode(w *writer) { w.fixed(b.Raw) }

func (b *Set) encode(w *writer) {
	w.str(b.Collection)
	w.str(b.ID)
	w.u32(uint32(len(b.Fields)))
	for _, f := range b.Fields {
		w.str(f.Name)
		w.bytes(f.Value)
	}
}

func (b *Counter) encode(w *writer) {
	w.str(b.Collection)
	w.str(b.ID)
	w.str(b.Field)
	w.i64(b.Delta)
}

func (b *SetAdd) encode(w *writer) {
	w.str(b.Collection)
	w.str(b.ID)
	w.str(b.Field)
	w.bytes(b.Elem)
}

func (b *SetRemove) encode(w *writer) {
	w.str(b.Collection)
	w.str(b.ID)
	w.str(b.Field)
	w.bytes(b.Elem)
	w.u32(uint32(len(b.Tags)))
	for _, t := range b.Tags {
		w.hash(t)
	}
}

func (b *Grant) encode(w *writer) {
	w.key(b.Member)
	w.u8(uint8(b.Role))
	w.u64(b.FromSeq)
	w.str(b.Name)
	w.offer(b.Offer)
}

func (b *ChangeRole) encode(w *writer) {
	w.key(b.Member)
	w.u8(uint8(b.Role))
	w.u64(b.FromSeq)
}

func (b *Revoke) encode(w *writer)      { w.key(b.Member); w.u64(b.LastSeq) }
func (b *RevokeOffer) encode(w *writer) { w.offer(b.Offer) }
func (b *Redeem) encode(w *writer)      { w.offer(b.Offer); w.key(b.Member) }

func (b *Epoch) encode(w *writer) {
	w.u32(b.Number)
	w.u32(uint32(len(b.Keys)))
	for _, k := range b.Keys {
		w.key(k.Member)
		w.bytes(k.Box)
	}
}

// decodeBody parses the body bytes of an op of the given kind and checks
// that they are in canonical form.
func decodeBody(k Kind, b []byte) (Body, error) {
	r := reader{b: b}
	var body Body
	switch k {
	case KindGenesis:
		g := &Genesis{Name: r.str(), AuthorName: r.str()}
		copy(g.Nonce[:], r.take(16, "nonce"))
		body = g
	case KindSet:
		s := &Set{Collection: r.str(), ID: r.str()}
		s.Fields = make([]Field, r.count(8))
		for i := range s.Fields {
			s.Fields[i] = Field{Name: r.str(), Value: r.bytes()}
		}
		body = s
	case KindDelete:
		body = &Delete{Collection: r.str(), ID: r.str()}
	case KindCounter:
		body = &Counter{Collection: r.str(), ID: r.str(), Field: r.str(), Delta: r.i64()}
	case KindSetAdd:
		body = &SetAdd{Collection: r.str(), ID: r.str(), Field: r.str(), Elem: r.bytes()}
	case KindSetRemove:
		s := &SetRemove{Collection: r.str(), ID: r.str(), Field: r.str(), Elem: r.bytes()}
		s.Tags = make([]Hash, r.count(32))
		for i := range s.Tags {
			s.Tags[i] = r.hash()
		}
		body = s
	case KindGrant:
		body = &Grant{Member: r.key(), Role: Role(r.u8()), FromSeq: r.u64(),
			Name: r.str(), Offer: r.offer()}
	case KindRole:
		body = &ChangeRole{Member: r.key(), Role: Role(r.u8()), FromSeq: r.u64()}
	case KindRevoke:
		body = &Revoke{Member: r.key(), LastSeq: r.u64()}
	case KindLeave:
		body = &Leave{}
	case KindRevokeOffer:
		body = &RevokeOffer{Offer: r.offer()}
	case KindRedeem:
		body = &Redeem{Offer: r.offer(), Member: r.key()}
	case KindSealed:
		sb := &Sealed{Inner: Kind(r.u8())}
		copy(sb.Nonce[:], r.take(len(sb.Nonce), "nonce"))
		sb.Box = r.bytes()
		body = sb
	case KindEpoch:
		e := &Epoch{Number: r.u32()}
		e.Keys = make([]SealedKey, r.count(36))
		for i := range e.Keys {
			e.Keys[i] = SealedKey{Member: r.key(), Box: r.bytes()}
		}
		body = e
	default:
		return &Unknown{K: k, Raw: b}, nil
	}
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("%s body: %w", k, err)
	}
	if err := validateBody(body); err != nil {
		return nil, fmt.Errorf("%s body: %w", k, err)
	}
	return body, nil
}

// validateBody checks the canonical-form rules that the byte layout alone
// does not: name sizes, sorted unique lists, roles in range.
func validateBody(b Body) error {
	var names []string
	switch b := b.(type) {
	case *Genesis:
		names = []string{b.Name, b.AuthorName}
	case *Set:
		names = []string{b.Collection, b.ID}
		for i, f := range b.Fields {
			names = append(names, f.Name)
			if i > 0 && b.Fields[i-1].Name >= f.Name {
				return fmt.Errorf("%w: fields not sorted and unique", ErrMalformed)
			}
		}
	case *Delete:
		names = []string{b.Collection, b.ID}
	case *Counter:
		names = []string{b.Collection, b.ID, b.Field}
	case *SetAdd:
		names = []string{b.Collection, b.ID, b.Field}
	case *SetRemove:
		names = []string{b.Collection, b.ID, b.Field}
		for i := 1; i < len(b.Tags); i++ {
			if bytes.Compare(b.Tags[i-1][:], b.Tags[i][:]) >= 0 {
				return fmt.Errorf("%w: tags not sorted and unique", ErrMalformed)
			}
		}
	case *Grant:
		names = []string{b.Name}
		if b.Role < RoleReader || b.Role > RoleAdmin || b.FromSeq == 0 {
			return fmt.Errorf("%w: grant of %s from seq %d", ErrMalformed, b.Role, b.FromSeq)
		}
	case *ChangeRole:
		if b.Role < RoleReader || b.Role > RoleAdmin || b.FromSeq == 0 {
			return fmt.Errorf("%w: role change to %s from seq %d", ErrMalformed, b.Role, b.FromSeq)
		}
	case *Sealed:
		if !isData(b.Inner) {
			return fmt.Errorf("%w: a sealed %s body", ErrMalformed, b.Inner)
		}
	case *Epoch:
		for i := 1; i < len(b.Keys); i++ {
			if bytes.Compare(b.Keys[i-1].Member[:], b.Keys[i].Member[:]) >= 0 {
				return fmt.Errorf("%w: epoch keys not sorted and unique", ErrMalformed)
			}
		}
	}
	for _, n := range names {
		if len(n) > MaxNameSize {
			return fmt.Errorf("%w: name of %d bytes", ErrTooLarge, len(n))
		}
	}
	if s, ok := b.(*Set); ok && (s.Collection == "" || s.ID == "") {
		return fmt.Errorf("%w: empty collection or id", ErrMalformed)
	}
	return nil
}
