package crdt

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// Hash is a SHA-256 digest. Op hashes link author chains and name ops on
// the wire; realm ids are the hash of the realm's genesis op.
type Hash [32]byte

// RealmID names a realm: the hash of its genesis op, so a realm id cannot be
// claimed by anyone but the author of that op.
type RealmID = Hash

// PublicKey is an author's ed25519 public key: the node's libp2p identity.
type PublicKey [32]byte

// OfferID names one offer (invite token).
type OfferID [16]byte

// String returns the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is all zero bytes.
func (h Hash) IsZero() bool { return h == Hash{} }

// String returns the key in lower-case hex.
func (k PublicKey) String() string { return hex.EncodeToString(k[:]) }

// Short returns the first eight hex digits of k, for logs and tests.
func (k PublicKey) Short() string { return k.String()[:8] }

// String returns the offer id in lower-case hex.
func (o OfferID) String() string { return hex.EncodeToString(o[:]) }

// ParseHash reads a hash written by Hash.String.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("parse hash: want %d hex digits, got %d", 2*len(h), len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("parse hash: %w", err)
	}
	return h, nil
}

// Role is what a member may do in a realm. Roles are ordered:
// RoleNone < RoleReader < RoleWriter < RoleAdmin.
type Role uint8

// The roles, weakest first.
const (
	RoleNone Role = iota
	RoleReader
	RoleWriter
	RoleAdmin
)

var roleNames = [...]string{"none", "reader", "writer", "admin"}

// String returns the role's name as the API and CLI spell it.
func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// ParseRole reads "reader", "writer" or "admin".
func ParseRole(s string) (Role, error) {
	for i, n := range roleNames[1:] {
		if n == s {
			return Role(i + 1), nil
		}
	}
	return RoleNone, fmt.Errorf("%w: %q", ErrBadRole, s)
}

// Errors returned by decoding and applying ops. Each leaves the realm's
// state unchanged.
var (
	ErrMalformed    = errors.New("malformed op")
	ErrTooLarge     = errors.New("op too large")
	ErrBadSignature = errors.New("bad signature")
	ErrWrongRealm   = errors.New("op for another realm")
	ErrBrokenChain  = errors.New("broken chain link")
	ErrNotMember    = errors.New("author is not a member")
	ErrNotPermitted = errors.New("role does not allow this op")
	ErrEquivocation = errors.New("equivocation: two ops with the same author and seq")
	ErrClock        = errors.New("clock does not advance along the author chain")
	ErrBadRole      = errors.New("bad role")
	ErrNotFound     = errors.New("not found")
	ErrPendingFull  = errors.New("too many held-back ops")
)
