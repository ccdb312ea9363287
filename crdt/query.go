package crdt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
)

// load reads the realm's heads, membership ops, equivocation marks and
// digest from storage.
func (r *Realm) load() error {
	v := view{r.st, NewBatch()}
	var err error
	scanErr := v.scan(r.keys.heads(), func(k string, val []byte) bool {
		var a PublicKey
		if _, err = hex.Decode(a[:], []byte(k[len(r.keys.heads()):])); err != nil {
			return false
		}
		rd := reader{b: val}
		h := &head{seq: rd.u64(), hash: rd.hash(), clock: Timestamp(rd.u64()),
			unverified: int(rd.u32()), unverifiedBytes: int(rd.u32())}
		if err = rd.done(); err != nil {
			return false
		}
		r.heads[a] = h
		r.clock.Observe(h.clock)
		return true
	})
	if err = firstErr(scanErr, err); err != nil {
		return fmt.Errorf("heads: %w", err)
	}
	scanErr = v.scan(r.keys.equivs(), func(k string, val []byte) bool {
		var a PublicKey
		if _, err = hex.Decode(a[:], []byte(k[len(r.keys.equivs()):])); err != nil {
			return false
		}
		var e *Equivocation
		if e, err = decodeEvidence(val); err != nil {
			return false
		}
		r.frozen[a], r.evidence[a] = e.Held.Seq, e
		return true
	})
	if err = firstErr(scanErr, err); err != nil {
		return fmt.Errorf("equivocations: %w", err)
	}
	scanErr = v.scan(r.keys.earlies(), func(k string, _ []byte) bool {
		var key ObjectKey
		if key, err = parseObjectKey(k[len(r.keys.earlies()):]); err != nil {
			return false
		}
		if len(r.early) >= maxEarly {
			r.early, r.earlyAll = map[ObjectKey]bool{}, true
			return false
		}
		r.early[key] = true
		return true
	})
	if err = firstErr(scanErr, err); err != nil {
		return fmt.Errorf("early marks: %w", err)
	}
	if err := r.loadMembership(v); err != nil {
		return err
	}
	switch nc, err := v.get(r.keys.messageCount()); {
	case err == nil:
		n, size := binary.Uvarint(nc)
		if size <= 0 || size != len(nc) {
			return fmt.Errorf("%w: message count", ErrMalformed)
		}
		r.msgs = int(n)
	case isNotFound(err):
		// A store from before the count was kept: count once, and keep
		// the count from the next write on.
		if r.msgs, err = r.countMessages(v); err != nil {
			return fmt.Errorf("count messages: %w", err)
		}
		r.dirtyMsgs = r.msgs > 0
	default:
		return err
	}
	switch na, err := v.get(r.keys.arrivalCount()); {
	case err == nil:
		n, size := binary.Uvarint(na)
		if size <= 0 || size != len(na) {
			return fmt.Errorf("%w: arrival count", ErrMalformed)
		}
		r.arrived = n
	case !isNotFound(err): // none: a store from before the log, which starts now
		return err
	}
	dig, err := v.get(r.keys.digest())
	switch {
	case err == nil && len(dig) == len(r.objDig):
		copy(r.objDig[:], dig)
	case err == nil:
		return fmt.Errorf("%w: digest of %d bytes", ErrMalformed, len(dig))
	case !isNotFound(err):
		return err
	}
	return nil
}

func (r *Realm) loadMembership(v view) error {
	var stamps []Stamp
	var err error
	prefix := r.keys.mships()
	scanErr := v.scan(prefix, func(k string, _ []byte) bool {
		var s Stamp
		s, err = parseStampKey(k[len(prefix):])
		stamps = append(stamps, s)
		return err == nil
	})
	if err = firstErr(scanErr, err); err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	for _, s := range stamps {
		op, err := r.op(v, s.Author, s.Seq)
		if err != nil {
			return fmt.Errorf("membership: %w", err)
		}
		if g, ok := op.Body.(*Genesis); ok {
			r.genesis = op
			r.meta = Meta{Name: g.Name, Creator: op.Author, Created: op.Clock}
			continue
		}
		r.mship = append(r.mship, op)
	}
	r.acl = buildACL(r.genesis, r.mship, r.frozen)
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Object returns the visible state of an object, or ErrNotFound.
func (r *Realm) Object(key ObjectKey) (*Object, error) {
	obj, err := r.object(view{r.st, NewBatch()}, key)
	if err != nil {
		return nil, err
	}
	if obj == nil || !obj.visible() {
		return nil, fmt.Errorf("object %s/%s: %w", key.Collection, key.ID, ErrNotFound)
	}
	return obj, nil
}

// Objects lists the visible objects of a collection in id order, starting
// after the id after (all when empty), at most limit of them.
func (r *Realm) Objects(collection, after string, limit int) ([]*Object, error) {
	prefix := r.keys.collection(collection)
	start := prefix
	if after != "" {
		start = prefix + hexStr(after) + "\x00"
	}
	var out []*Object
	var err error
	scanErr := r.st.Scan(prefix, start, func(_ string, val []byte) bool {
		var o *Object
		// The value is only valid during the call, and o keeps it.
		if o, err = decodeObject(bytes.Clone(val)); err != nil {
			return false
		}
		if o.visible() {
			out = append(out, o)
		}
		return len(out) < limit
	})
	if err = firstErr(scanErr, err); err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	return out, nil
}

// Messages lists chat messages in realm order, starting after the message
// with id after (from the first when empty), at most limit of them.
func (r *Realm) Messages(after string, limit int) ([]*Object, error) {
	prefix := r.keys.messages()
	start := prefix
	if after != "" {
		m, err := r.Object(ObjectKey{MessagesCollection, after})
		if err != nil {
			return nil, fmt.Errorf("messages after %q: %w", after, err)
		}
		start = r.keys.message(m.Created) + "\x00"
	}
	var ids []string
	err := r.st.Scan(prefix, start, func(_ string, val []byte) bool {
		ids = append(ids, string(val))
		return len(ids) < limit
	})
	if err != nil {
		return nil, fmt.Errorf("messages: %w", err)
	}
	out := make([]*Object, 0, len(ids))
	for _, id := range ids {
		m, err := r.Object(ObjectKey{MessagesCollection, id})
		if err != nil {
			return nil, fmt.Errorf("messages: %w", err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Arrivals returns, in the order they became visible here, the ids of
// the messages that did after the after-th (up to limit of them), and
// the position of the last one returned (after, if none). This is the
// order a live view wants: a message written elsewhere can arrive late
// and sort before messages shown already, and Messages(after) would
// never return it. A message that became visible, went and came back
// is listed again; one listed may since have gone (Object tells). The
// log holds messages that became visible since this replica's store
// kept it; ArrivalHead is the position of the newest.
func (r *Realm) Arrivals(after uint64, limit int) (ids []string, last uint64, err error) {
	prefix := r.keys.arrivals()
	var bad error
	// An entry is keyed by the position of its last message, so the first
	// one at or past after+1 holds after+1.
	err = r.st.Scan(prefix, r.keys.arrival(after+1), func(k string, val []byte) bool {
		end, err := parseArrivalKey(k[len(prefix):])
		if err != nil {
			bad = err
			return false
		}
		rd := reader{b: val}
		n := rd.count(4)
		entry := make([]string, n)
		for i := range entry {
			entry[i] = rd.str()
		}
		if err := rd.done(); err != nil || uint64(n) > end {
			bad = fmt.Errorf("%w: arrival log entry %d", ErrMalformed, end)
			return false
		}
		first := end - uint64(n) + 1
		for i, id := range entry {
			if first+uint64(i) > after && len(ids) < limit {
				ids = append(ids, id)
			}
		}
		return len(ids) < limit
	})
	if err = firstErr(err, bad); err != nil {
		return nil, after, fmt.Errorf("arrivals: %w", err)
	}
	return ids, after + uint64(len(ids)), nil
}

// ArrivalHead returns the position of the newest entry of the arrival log.
func (r *Realm) ArrivalHead() uint64 { return r.arrived }

// MessageCount returns how many chat messages are visible. The count is
// kept as messages come and go, and stored, so it costs nothing to ask.
func (r *Realm) MessageCount() int { return r.msgs }

// countMessages counts the visible messages by scanning their index.
func (r *Realm) countMessages(v view) (int, error) {
	n := 0
	err := v.scan(r.keys.messages(), func(string, []byte) bool {
		n++
		return true
	})
	return n, err
}

// Member is one member of a realm as the API shows it.
type Member struct {
	Key    PublicKey
	Name   string
	Role   Role
	Joined Timestamp
}

// Members lists the current members, sorted by key.
func (r *Realm) Members() []Member {
	var out []Member
	for k, m := range r.acl.members {
		if m.active {
			out = append(out, Member{Key: k, Name: m.name, Role: m.role(), Joined: m.joined})
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	return out
}

// Role returns the current role of key; RoleNone for a non-member.
func (r *Realm) Role(key PublicKey) Role {
	if m := r.acl.members[key]; m != nil {
		return m.role()
	}
	return RoleNone
}

// Offer reports how many members an offer admitted (its uses) and whether
// it was revoked, as far as this replica knows.
func (r *Realm) Offer(id OfferID) (uses int, revoked bool) {
	if o := r.acl.offers[id]; o != nil {
		return len(o.used), o.revoked
	}
	return 0, false
}

// KeyEpoch returns the newest key epoch and its sealed keys.
func (r *Realm) KeyEpoch() (uint32, []SealedKey) { return r.acl.epoch, r.acl.keys }

// Evidence returns the equivocations this replica holds proof of, one per
// author (the earliest seq seen), sorted by author: what to pass on to
// peers so that they freeze the same chains.
func (r *Realm) Evidence() []*Equivocation {
	out := make([]*Equivocation, 0, len(r.evidence))
	for _, e := range r.evidence {
		out = append(out, e)
	}
	slices.SortFunc(out, func(x, y *Equivocation) int {
		return bytes.Compare(x.Held.Author[:], y.Held.Author[:])
	})
	return out
}

// Head returns the newest seq and op hash of author's chain held here.
func (r *Realm) Head(author PublicKey) (uint64, Hash) {
	if h := r.heads[author]; h != nil {
		return h.seq, h.hash
	}
	return 0, Hash{}
}

// VersionVector returns, per author, the highest contiguous seq held.
func (r *Realm) VersionVector() map[PublicKey]uint64 {
	vv := make(map[PublicKey]uint64, len(r.heads))
	for a, h := range r.heads {
		vv[a] = h.seq
	}
	return vv
}

// Digest hashes the realm's visible state: objects, members, offers and
// key epoch. Two replicas have equal digests exactly when what their
// queries show is equal.
func (r *Realm) Digest() Hash {
	m := r.acl.digest()
	w := writer{}
	w.hash(r.id)
	w.hash(r.objDig)
	w.hash(m)
	return sha256.Sum256(w.b)
}
