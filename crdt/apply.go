package crdt

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// store appends a permitted op to its author's chain and applies its
// effects, staging every write in b.
func (r *Realm) store(b *Batch, op *Op, res *Result) error {
	v := view{r.st, b}
	st := op.Stamp()
	b.put(r.keys.op(op.Author, op.Seq), op.Bytes())
	r.setHead(op)
	r.clock.Observe(op.Clock)
	res.Stored = append(res.Stored, op)

	if g, ok := op.Body.(*Genesis); ok {
		r.genesis = op
		r.meta = Meta{Name: g.Name, Creator: op.Author, Created: op.Clock}
		b.put(realmsPrefix+r.id.String(), []byte{})
		b.put(r.keys.mship(st), []byte{})
		return r.rebuildACL(b, res)
	}
	if isMembership(op.Kind()) {
		b.put(r.keys.mship(st), []byte{})
		i, _ := slices.BinarySearchFunc(r.mship, st, func(o *Op, s Stamp) int {
			return o.Stamp().Compare(s)
		})
		r.mship = slices.Insert(r.mship, i, op)
		if e, ok := op.Body.(*Epoch); ok {
			if o, ok := r.ring.(EpochObserver); ok {
				o.EpochStarted(e)
			}
		}
		return r.rebuildACL(b, res)
	}
	key, ok := objectOf(op.Body)
	if !ok {
		return nil // an unknown kind: kept and passed on, no effect here
	}
	b.put(r.keys.objectOp(key, st), []byte{})
	// A message the engine named (MessageID) cannot exist before the op
	// that creates it unless another op touched it first, and each such
	// op leaves a mark. Without a mark, the creating op writes without
	// reading: most ops are new messages, and their lookups would miss.
	// Once the creating op is stored, the mark has done its work.
	creator := key.namedBy(st)
	fresh := creator && !r.earlyAll && !r.early[key]
	if creator && r.early[key] {
		delete(r.early, key)
		b.del(r.keys.early(key))
	}
	valid := r.acl.dataValid(op.Author, op.Seq, r.frozen)
	var old *Object
	var err error
	if !fresh && (valid || !creator && key.engineNamed() && !r.early[key]) {
		if old, err = r.object(v, key); err != nil {
			return err
		}
		if old == nil && !creator {
			r.markEarly(b, key) // revalidation too may bring it in before its creator
		}
	}
	if !valid {
		return nil // stored without effect; revalidate brings it in if that changes
	}
	var obj *Object
	switch {
	case old == nil:
		obj = &Object{Key: key}
		obj.fold(op)
	case old.Updated.Less(st) || old.canFoldOutOfOrder(op):
		obj = cloneObject(old)
		obj.fold(op)
	default:
		if obj, err = r.refold(v, key); err != nil {
			return err
		}
	}
	r.putObject(b, old, obj, res)
	return nil
}

// markEarly marks key, when it may be a message the engine named, as
// touched by an op that did not create it while nothing of it was here:
// its creating op, if it comes later, must read what is here. A mark
// too many costs that op a lookup, nothing more.
func (r *Realm) markEarly(b *Batch, key ObjectKey) {
	if !key.engineNamed() || r.early[key] {
		return
	}
	b.put(r.keys.early(key), []byte{})
	if len(r.early) >= maxEarly {
		r.earlyAll = true // see maxEarly
		return
	}
	r.early[key] = true
}

// maxEarly bounds the marks a realm holds in memory. Marks come only from
// ops that write to a message before it exists, which honest writers do
// not do; past the bound, every creating op reads, which is always right,
// and opening reads no more than maxEarly marks.
const maxEarly = 4096

func isMembership(k Kind) bool {
	switch k {
	case KindGenesis, KindGrant, KindRole, KindRevoke, KindLeave,
		KindRevokeOffer, KindRedeem, KindEpoch:
		return true
	}
	return false
}

func (r *Realm) setHead(op *Op) {
	h := &head{seq: op.Seq, hash: op.Hash(), clock: op.Clock}
	if !op.verified {
		h.unverified, h.unverifiedBytes = 1, len(op.raw)
		if prev := r.heads[op.Author]; prev != nil && prev.seq+1 == op.Seq {
			h.unverified += prev.unverified
			h.unverifiedBytes += prev.unverifiedBytes
		}
		if !op.Signed() {
			h.op = op
		}
	}
	r.heads[op.Author] = h
	if !slices.Contains(r.dirtyHeads, op.Author) {
		r.dirtyHeads = append(r.dirtyHeads, op.Author)
	}
}

// flush stages what the ops applied in one engine call changed of the
// chain heads and of the digest. They change with every op, but only the
// last value of a call is written: one write each, not one per op.
func (r *Realm) flush(b *Batch) {
	for _, a := range r.dirtyHeads {
		h := r.heads[a]
		w := writer{b: make([]byte, 0, 8+32+8+4+4)}
		w.u64(h.seq)
		w.hash(h.hash)
		w.u64(uint64(h.clock))
		w.u32(uint32(h.unverified))
		w.u32(uint32(h.unverifiedBytes))
		b.put(r.keys.head(a), w.b)
	}
	r.dirtyHeads = r.dirtyHeads[:0]
	if r.dirtyDigest {
		b.put(r.keys.digest(), slices.Clone(r.objDig[:]))
		r.dirtyDigest = false
	}
	if len(r.arriving) > 0 {
		// One entry for the call's messages: a catch-up range of a
		// thousand messages writes one key, not a thousand.
		r.arrived += uint64(len(r.arriving))
		w := writer{}
		w.u32(uint32(len(r.arriving)))
		for _, id := range r.arriving {
			w.str(id)
		}
		b.put(r.keys.arrival(r.arrived), w.b)
		r.arriving = r.arriving[:0]
	}
	if r.dirtyMsgs {
		b.put(r.keys.messageCount(), binary.AppendUvarint(nil, uint64(r.msgs)))
		b.put(r.keys.arrivalCount(), binary.AppendUvarint(nil, r.arrived))
		r.dirtyMsgs = false
	}
}

// object reads an object's stored state; nil if it was never written.
func (r *Realm) object(v view, key ObjectKey) (*Object, error) {
	raw, err := v.get(r.keys.object(key))
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read object: %w", err)
	}
	return decodeObject(raw)
}

// cloneObject copies what fold may change in place, so that the stored
// (and perhaps shared) decoded value is never modified.
func cloneObject(o *Object) *Object {
	c := *o
	c.Fields = slices.Clone(o.Fields)
	c.Counters = slices.Clone(o.Counters)
	c.Sets = slices.Clone(o.Sets)
	for i := range c.Sets {
		c.Sets[i].Elems = slices.Clone(c.Sets[i].Elems)
		for j := range c.Sets[i].Elems {
			c.Sets[i].Elems[j].Tags = slices.Clone(c.Sets[i].Elems[j].Tags)
		}
	}
	return &c
}

// refold rebuilds an object from scratch by folding every op that touched
// it, in realm order, skipping ops the membership voids.
func (r *Realm) refold(v view, key ObjectKey) (*Object, error) {
	obj := &Object{Key: key}
	prefix := r.keys.objectOps(key)
	var stamps []Stamp
	err := v.scan(prefix, func(k string, _ []byte) bool {
		s, err := parseStampKey(k[len(prefix):])
		if err == nil {
			stamps = append(stamps, s)
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("refold %s/%s: %w", key.Collection, key.ID, err)
	}
	for _, s := range stamps {
		if !r.acl.dataValid(s.Author, s.Seq, r.frozen) {
			continue
		}
		op, err := r.op(v, s.Author, s.Seq)
		if err != nil {
			return nil, fmt.Errorf("refold %s/%s: %w", key.Collection, key.ID, err)
		}
		obj.fold(op)
	}
	return obj, nil
}

// putObject stages an object's new state with its message index entry and
// the realm digest.
func (r *Realm) putObject(b *Batch, old, obj *Object, res *Result) {
	key := obj.Key
	if key.Collection == MessagesCollection {
		if old.visibleMsg() && (!obj.visible() || old.Created != obj.Created) {
			b.del(r.keys.message(old.Created))
		}
		if obj.visible() {
			b.put(r.keys.message(obj.Created), []byte(key.ID))
		}
		switch {
		case !old.visibleMsg() && obj.visible():
			r.msgs++
			r.arriving = append(r.arriving, key.ID)
			r.dirtyMsgs = true
		case old.visibleMsg() && !obj.visible():
			r.msgs--
			r.dirtyMsgs = true
		}
	}
	if obj.Created.IsZero() && obj.Tomb.IsZero() {
		b.del(r.keys.object(key)) // every op that touched it is void
	} else {
		b.put(r.keys.object(key), obj.encode())
	}
	xorInto(&r.objDig, old.digest())
	xorInto(&r.objDig, obj.digest())
	r.dirtyDigest = true
	res.addObject(key)
}

func (o *Object) visibleMsg() bool { return o != nil && o.visible() }

// rebuildACL replays the membership ops and refolds every object touched
// by a data op whose validity that changed.
func (r *Realm) rebuildACL(b *Batch, res *Result) error {
	old := r.acl
	r.acl = buildACL(r.genesis, r.mship, r.frozen)
	res.Members = true
	r.pruneStrangers()
	return r.revalidate(b, old, r.frozen, res)
}

// revalidate refolds the objects touched by ops whose validity differs
// between the old membership and the current one.
func (r *Realm) revalidate(b *Batch, old *acl, oldFrozen map[PublicKey]uint64, res *Result) error {
	v := view{r.st, b}
	var touched []ObjectKey
	seen := make(map[ObjectKey]bool)
	for author, ranges := range changedRanges(old, r.acl, r.heads, oldFrozen, r.frozen) {
		for _, rg := range ranges {
			for seq := rg[0]; seq <= rg[1]; seq++ {
				op, err := r.op(v, author, seq)
				if err != nil {
					return fmt.Errorf("revalidate: %w", err)
				}
				if k, ok := objectOf(op.Body); ok && !seen[k] {
					seen[k] = true
					touched = append(touched, k)
				}
			}
		}
	}
	for _, k := range touched {
		old, err := r.object(v, k)
		if err != nil {
			return err
		}
		obj, err := r.refold(v, k)
		if err != nil {
			return err
		}
		r.putObject(b, old, obj, res)
	}
	return nil
}

// encode stores the evidence: both ops, each with its length, then, when
// either is unsigned, the ops that vouch for each, a count first.
func (e *Equivocation) encode() []byte {
	w := writer{}
	w.bytes(e.Held.raw)
	w.bytes(e.Got.raw)
	if len(e.HeldRest)+len(e.GotRest) == 0 {
		return w.b
	}
	for _, rest := range [][]*Op{e.HeldRest, e.GotRest} {
		w.u32(uint32(len(rest)))
		for _, op := range rest {
			w.bytes(op.raw)
		}
	}
	return w.b
}

// maxEvidenceSize bounds encoded evidence: two ops, and two groups that
// vouch for them, each with its counts and lengths.
const maxEvidenceSize = 2*(4+MaxOpSize) + 2*(4+MaxGroupBytes+4*MaxGroupOps)

// decodeEvidence reads what encode stored. The ops are checked as any op
// read from storage is: by their encoding, not their signatures. Evidence
// written before groups existed ends after the two ops.
func decodeEvidence(b []byte) (*Equivocation, error) {
	if len(b) > maxEvidenceSize {
		return nil, fmt.Errorf("decode evidence: %w: %d bytes", ErrTooLarge, len(b))
	}
	r := reader{b: b}
	decode := func(raw []byte) *Op {
		if r.err != nil {
			return nil
		}
		op, err := DecodeOp(slices.Clone(raw))
		if err != nil {
			r.err = err
		}
		return op
	}
	e := &Equivocation{}
	e.Held, e.Got = decode(r.bytes()), decode(r.bytes())
	grouped := r.err == nil && len(r.b) > 0
	for _, rest := range []*[]*Op{&e.HeldRest, &e.GotRest} {
		if !grouped {
			break
		}
		n := r.u32()
		if n > MaxGroupOps {
			return nil, fmt.Errorf("decode evidence: %w: %d ops vouch", ErrMalformed, n)
		}
		for range n {
			if op := decode(r.bytes()); op != nil {
				*rest = append(*rest, op)
			}
		}
	}
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("decode evidence: %w", err)
	}
	if grouped && len(e.HeldRest)+len(e.GotRest) == 0 {
		return nil, fmt.Errorf("decode evidence: %w: empty groups", ErrMalformed)
	}
	held, got := e.Held, e.Got
	if held.Author != got.Author || held.Seq != got.Seq || held.Hash() == got.Hash() {
		return nil, fmt.Errorf("decode evidence: %w: not two ops at one position", ErrMalformed)
	}
	return e, nil
}

// vouched checks that rest, the ops after op in its chain, end with a
// signed op whose signature vouches for op (or that op is signed, when
// rest is empty).
func vouched(op *Op, rest []*Op) error {
	size := 0
	for _, next := range rest {
		size += len(next.raw)
	}
	if len(rest) > MaxGroupOps || size > MaxGroupBytes {
		return fmt.Errorf("op %s: %w: %d ops, %d bytes vouch for it", op, ErrTooLarge, len(rest), size)
	}
	last := op
	for _, next := range rest {
		if next.Author != op.Author || next.Seq != last.Seq+1 || next.Prev != last.Hash() {
			return fmt.Errorf("op %s: %w", next, ErrBrokenChain)
		}
		last = next
	}
	return last.VerifySignature()
}

// ApplyEvidence records that an author signed two different ops at one
// seq. From that seq on, none of the author's ops has any effect, on every
// replica that has seen the evidence, so replicas that kept different
// halves of the fork still agree. The caller should pass the evidence on.
func (r *Realm) ApplyEvidence(b *Batch, e *Equivocation) (*Result, error) {
	defer r.flush(b)
	res := &Result{}
	x, y := e.Held, e.Got
	if x.Author != y.Author || x.Seq != y.Seq || x.Hash() == y.Hash() {
		return res, fmt.Errorf("evidence: %w: not two ops at one position", ErrMalformed)
	}
	if err := r.checkRealm(x); err != nil {
		return res, err
	}
	if err := r.checkRealm(y); err != nil {
		return res, err
	}
	if err := vouched(x, e.HeldRest); err != nil {
		return res, fmt.Errorf("evidence: %w", err)
	}
	if err := vouched(y, e.GotRest); err != nil {
		return res, fmt.Errorf("evidence: %w", err)
	}
	if f, ok := r.frozen[x.Author]; ok && f <= x.Seq {
		return res, nil
	}
	oldFrozen := make(map[PublicKey]uint64, len(r.frozen)+1)
	for k, v := range r.frozen {
		oldFrozen[k] = v
	}
	r.frozen[x.Author] = x.Seq
	r.evidence[x.Author] = e
	b.put(r.keys.equiv(x.Author), e.encode())
	old := r.acl
	r.acl = buildACL(r.genesis, r.mship, r.frozen)
	res.Members = true
	return res, r.revalidate(b, old, oldFrozen, res)
}
