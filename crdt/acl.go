package crdt

import (
	"bytes"
	"crypto/sha256"
	"slices"
)

// acl is the membership of a realm: a pure function of the realm's
// membership ops (genesis, grant, role, revoke, leave, offer and epoch
// ops) and of the equivocations seen. See doc.go for the rules.
type acl struct {
	genesis PublicKey
	members map[PublicKey]*member
	offers  map[OfferID]*offerState
	epoch   uint32
	keys    []SealedKey // the newest epoch's sealed keys

	void map[Stamp]bool // membership ops with no effect
}

// member is one author's standing over the seqs of its chain.
type member struct {
	segs   []segment // by ascending from
	active bool      // a member now (not removed, not left)
	name   string
	joined Timestamp
	cut    uint64 // last seq that stayed valid at the newest removal
}

// segment gives role to seqs from..(next segment's from - 1).
type segment struct {
	from uint64
	role Role
}

type offerState struct {
	used    map[PublicKey]bool // the members it admitted: its uses
	revoked bool
}

func (m *member) roleAt(seq uint64) Role {
	role := RoleNone
	for _, s := range m.segs {
		if s.from > seq {
			break
		}
		role = s.role
	}
	return role
}

// role returns the member's role from its newest segment on.
func (m *member) role() Role {
	if !m.active || len(m.segs) == 0 {
		return RoleNone
	}
	return m.segs[len(m.segs)-1].role
}

// roleAt returns the role that author holds at seq of its chain, with
// equivocation taken into account.
func (a *acl) roleAt(author PublicKey, seq uint64, frozen map[PublicKey]uint64) Role {
	if f, ok := frozen[author]; ok && seq >= f {
		return RoleNone
	}
	m := a.members[author]
	if m == nil {
		return RoleNone
	}
	return m.roleAt(seq)
}

// buildACL replays membership ops, which must be sorted in realm order.
//
// A revoke, leave or role change takes effect from a seq of the member's
// chain. When the replay meets one that takes away the role a membership op
// of that member needed, an op it had already applied (earlier in realm
// order but at or after that seq in the member's chain), it marks the
// earliest such op void and starts again. A change a member makes to itself
// takes effect after the op that makes it, so that op is never voided by
// its own effect. Void marks only accumulate, so the replay ends after at
// most len(ops) restarts, and the result depends on the set of ops alone.
func buildACL(genesis *Op, ops []*Op, frozen map[PublicKey]uint64) *acl {
	void := make(map[Stamp]bool)
	for _, op := range ops {
		if f, ok := frozen[op.Author]; ok && op.Seq >= f {
			void[op.Stamp()] = true
		}
	}
	for {
		a, again := replay(genesis, ops, void, frozen)
		if !again {
			return a
		}
	}
}

func replay(genesis *Op, ops []*Op, void map[Stamp]bool, frozen map[PublicKey]uint64) (*acl, bool) {
	a := &acl{
		members: make(map[PublicKey]*member),
		offers:  make(map[OfferID]*offerState),
		void:    void,
	}
	if genesis == nil {
		return a, false
	}
	g := genesis.Body.(*Genesis)
	a.genesis = genesis.Author
	a.members[genesis.Author] = &member{
		segs: []segment{{1, RoleAdmin}}, active: true,
		name: g.AuthorName, joined: genesis.Clock,
	}
	applied := make(map[PublicKey][]*Op) // effective ops per author
	for _, op := range ops {
		if void[op.Stamp()] || op.Kind() == KindGenesis {
			continue
		}
		if !a.allows(op, frozen) {
			continue
		}
		who, from, changed := a.effect(op)
		applied[op.Author] = append(applied[op.Author], op)
		if !changed {
			continue
		}
		// Only the earliest op that lost its role is voided before the
		// replay starts again: voiding it may give a later one back the
		// role it needed.
		for _, prior := range applied[who] {
			if prior.Seq >= from && !a.allows(prior, frozen) {
				a.void[prior.Stamp()] = true
				return a, true
			}
		}
	}
	return a, false
}

// allows reports whether op's author may make it at its chain position.
func (a *acl) allows(op *Op, frozen map[PublicKey]uint64) bool {
	role := a.roleAt(op.Author, op.Seq, frozen)
	switch op.Kind() {
	case KindLeave:
		return role >= RoleReader
	case KindSet, KindDelete, KindCounter, KindSetAdd, KindSetRemove:
		return role >= RoleWriter
	case KindGrant, KindRole, KindRevoke, KindRevokeOffer, KindRedeem, KindEpoch:
		return role == RoleAdmin
	}
	return role >= RoleWriter // unknown kinds
}

// effect applies a permitted membership op. When the op changes or ends a
// member's role, it returns that member and the first seq of its chain
// whose role changed.
func (a *acl) effect(op *Op) (who PublicKey, from uint64, changed bool) {
	switch b := op.Body.(type) {
	case *Grant:
		a.grant(b, op.Clock)
	case *ChangeRole:
		m := a.members[b.Member]
		if m == nil || !m.active {
			return PublicKey{}, 0, false
		}
		from := max(b.FromSeq, m.segs[len(m.segs)-1].from)
		if b.Member == op.Author {
			from = max(from, op.Seq+1)
		}
		if last := &m.segs[len(m.segs)-1]; last.from == from {
			last.role = b.Role
		} else {
			m.segs = append(m.segs, segment{from, b.Role})
		}
		return b.Member, from, true
	case *Revoke:
		last := b.LastSeq
		if b.Member == op.Author {
			last = max(last, op.Seq)
		}
		if a.remove(b.Member, last) {
			return b.Member, last + 1, true
		}
	case *Leave:
		if a.remove(op.Author, op.Seq) {
			return op.Author, op.Seq + 1, true
		}
	case *RevokeOffer:
		a.offer(b.Offer).revoked = true
	case *Redeem:
		a.offer(b.Offer).used[b.Member] = true
	case *Epoch:
		if b.Number > a.epoch {
			a.epoch, a.keys = b.Number, b.Keys
		}
	}
	return PublicKey{}, 0, false
}

func (a *acl) grant(b *Grant, at Timestamp) {
	if b.Offer != (OfferID{}) {
		a.offer(b.Offer).used[b.Member] = true
	}
	m := a.members[b.Member]
	if m == nil {
		m = &member{}
		a.members[b.Member] = m
	}
	if m.active {
		return
	}
	from := b.FromSeq
	if len(m.segs) > 0 {
		from = max(from, m.cut+1, m.segs[len(m.segs)-1].from)
	}
	m.segs = append(m.segs, segment{from, b.Role})
	m.active, m.name, m.joined = true, b.Name, at
}

// remove ends m's membership after seq last; it reports false if m was not
// a member.
func (a *acl) remove(who PublicKey, last uint64) bool {
	m := a.members[who]
	if m == nil || !m.active {
		return false
	}
	i := 0
	for i < len(m.segs) && m.segs[i].from <= last {
		i++
	}
	m.segs = append(m.segs[:i], segment{last + 1, RoleNone})
	m.active, m.cut = false, last
	return true
}

func (a *acl) offer(id OfferID) *offerState {
	o := a.offers[id]
	if o == nil {
		o = &offerState{used: make(map[PublicKey]bool)}
		a.offers[id] = o
	}
	return o
}

// dataValid reports whether a data op of author at seq has effect.
func (a *acl) dataValid(author PublicKey, seq uint64, frozen map[PublicKey]uint64) bool {
	return a.roleAt(author, seq, frozen) >= RoleWriter
}

// changedRanges returns, per author, the seq ranges (within 1..heads) over
// which data-op validity differs between a and b.
func changedRanges(a, b *acl, heads map[PublicKey]*head, fa, fb map[PublicKey]uint64) map[PublicKey][][2]uint64 {
	out := make(map[PublicKey][][2]uint64)
	for author, h := range heads {
		var bounds []uint64
		bounds = append(bounds, 1)
		for _, x := range []*acl{a, b} {
			if m := x.members[author]; m != nil {
				for _, s := range m.segs {
					bounds = append(bounds, s.from)
				}
			}
		}
		for _, f := range []map[PublicKey]uint64{fa, fb} {
			if s, ok := f[author]; ok {
				bounds = append(bounds, s)
			}
		}
		slices.Sort(bounds)
		bounds = slices.Compact(bounds)
		for i, from := range bounds {
			if from > h.seq {
				break
			}
			to := h.seq
			if i+1 < len(bounds) && bounds[i+1]-1 < to {
				to = bounds[i+1] - 1
			}
			if a.dataValid(author, from, fa) != b.dataValid(author, from, fb) {
				out[author] = append(out[author], [2]uint64{from, to})
			}
		}
	}
	return out
}

// digest hashes the visible membership: active members with their roles,
// names and times of joining, offers, and the key epoch with its keys.
func (a *acl) digest() Hash {
	keys := make([]PublicKey, 0, len(a.members))
	for k, m := range a.members {
		if m.active {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(x, y PublicKey) int { return bytes.Compare(x[:], y[:]) })
	w := writer{}
	for _, k := range keys {
		m := a.members[k]
		w.key(k)
		w.u8(uint8(m.role()))
		w.str(m.name)
		w.u64(uint64(m.joined))
	}
	ids := make([]OfferID, 0, len(a.offers))
	for id := range a.offers {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(x, y OfferID) int { return bytes.Compare(x[:], y[:]) })
	for _, id := range ids {
		o := a.offers[id]
		w.offer(id)
		w.u32(uint32(len(o.used)))
		w.flag(o.revoked)
	}
	(&Epoch{Number: a.epoch, Keys: a.keys}).encode(&w)
	return sha256.Sum256(w.b)
}
