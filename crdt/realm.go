package crdt

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MaxClockSkew is how far ahead of the local wall clock an op's clock may
// be before the op is held back (in milliseconds).
const MaxClockSkew = 60_000

// MaxPending and MaxPendingBytes bound the ops a realm holds back (ahead
// of a gap in their chain, or stamped in the future) in memory: by count,
// and by the size of their encodings.
const (
	MaxPending      = 16384
	MaxPendingBytes = 32 << 20
)

// head is the newest op of an author chain held here.
type head struct {
	seq   uint64
	hash  Hash
	clock Timestamp

	// The ops after the newest op here whose signature is known to hold,
	// and their bytes: the start of a group whose signed op is still to
	// come (or, from a peer, to be checked). See checkVouched.
	unverified, unverifiedBytes int
	op                          *Op // the op at the head, when unsigned
}

// Realm is one replica of one realm. It is not safe for concurrent use: the
// caller serialises calls, and commits each Batch it passes in before a
// failure could be seen by anyone (see doc.go for the caller's duties).
type Realm struct {
	id   RealmID
	st   Storage
	keys keys

	genesis  *Op
	meta     Meta
	heads    map[PublicKey]*head
	mship    []*Op                       // membership ops, in realm order
	frozen   map[PublicKey]uint64        // equivocating authors: first bad seq
	evidence map[PublicKey]*Equivocation // the proof behind each frozen seq
	acl      *acl
	objDig   Hash // XOR of the digests of all visible objects
	clock    Clock
	early    map[ObjectKey]bool // messages touched before their creating op (apply.go)
	earlyAll bool               // too many marks to hold: every creating op reads

	msgs     int      // visible messages
	arrived  uint64   // messages in the arrival log (query.go, Arrivals)
	arriving []string // messages that became visible in this engine call

	dirtyHeads  []PublicKey // heads changed since the last flush
	dirtyDigest bool        // objDig changed since the last flush
	dirtyMsgs   bool        // msgs or arrived changed since the last flush

	pending map[PublicKey]map[uint64]heldOp
	npend   int // ops held in pending
	nbytes  int // their encoded size

	ring Keyring // nil: data is written in the clear (seal.go)
}

// Meta describes a realm: what its genesis op says.
type Meta struct {
	Name    string
	Creator PublicKey
	Created Timestamp
}

// Result says what one engine call did.
type Result struct {
	Stored  []*Op       // ops now in their author chains, in the order stored
	Objects []ObjectKey // objects whose visible state may have changed
	Members bool        // membership, offers or the key epoch changed
	Held    int         // ops held back: ahead of a gap, or from the future
	Dups    int         // ops that were already here
	Void    int         // ops stored without effect: the role did not allow them

	seen map[ObjectKey]bool
}

// addObject adds k to r.Objects once. Most results name a handful of
// objects, so the index map is made only once the list grows long.
func (r *Result) addObject(k ObjectKey) {
	const scanMax = 16
	if r.seen != nil {
		if !r.seen[k] {
			r.seen[k] = true
			r.Objects = append(r.Objects, k)
		}
		return
	}
	if slices.Contains(r.Objects, k) {
		return
	}
	r.Objects = append(r.Objects, k)
	if len(r.Objects) > scanMax {
		r.seen = make(map[ObjectKey]bool, 2*len(r.Objects))
		for _, o := range r.Objects {
			r.seen[o] = true
		}
	}
}

// ID returns the realm id.
func (r *Realm) ID() RealmID { return r.id }

// Meta returns the realm's name, creator and creation time; the zero Meta
// while the genesis op has not arrived.
func (r *Realm) Meta() Meta { return r.meta }

// HasGenesis reports whether the genesis op is here.
func (r *Realm) HasGenesis() bool { return r.genesis != nil }

// Clock returns the realm's hybrid logical clock reading.
func (r *Realm) Clock() Timestamp { return r.clock.Last() }

// Open loads a realm from storage. Only the chain heads, the membership
// ops and the digest are read, so opening does not grow with history. A
// realm with nothing stored yet opens empty and waits for its genesis op.
func Open(st Storage, id RealmID) (*Realm, error) {
	r := newRealm(st, id)
	if err := r.load(); err != nil {
		return nil, fmt.Errorf("open realm %s: %w", id, err)
	}
	return r, nil
}

func newRealm(st Storage, id RealmID) *Realm {
	return &Realm{
		id: id, st: st, keys: newKeys(id),
		heads:    make(map[PublicKey]*head),
		frozen:   make(map[PublicKey]uint64),
		evidence: make(map[PublicKey]*Equivocation),
		early:    make(map[ObjectKey]bool),
		acl:      buildACL(nil, nil, nil),
		pending:  make(map[PublicKey]map[uint64]heldOp),
	}
}

// Create makes a new realm: it builds and signs the genesis op with priv
// and stages it in b. nonce must be random.
func Create(st Storage, b *Batch, priv ed25519.PrivateKey, name, authorName string,
	nonce [16]byte, wallMs int64) (*Realm, *Op, error) {
	op := &Op{Seq: 1, Body: &Genesis{Name: name, AuthorName: authorName, Nonce: nonce}}
	copy(op.Author[:], priv.Public().(ed25519.PublicKey))
	op.Clock = MakeTimestamp(wallMs, 0)
	if err := validateBody(op.Body); err != nil {
		return nil, nil, fmt.Errorf("create realm: %w", err)
	}
	if err := op.Sign(priv); err != nil {
		return nil, nil, fmt.Errorf("create realm: %w", err)
	}
	r := newRealm(st, op.Hash())
	defer r.flush(b)
	if _, err := r.apply(b, op, wallMs, trusted); err != nil {
		return nil, nil, fmt.Errorf("create realm: %w", err)
	}
	return r, op, nil
}

// Write builds an op with body as the next op of priv's chain, signs it and
// applies it, staging the writes in b.
func (r *Realm) Write(b *Batch, priv ed25519.PrivateKey, body Body, wallMs int64) (*Op, *Result, error) {
	return r.write(b, priv, body, wallMs, true)
}

// WriteUnsigned is Write without the signature, for writing a group of
// ops with one signature: the op is vouched for by the next signed op of
// the chain (see Op.Signed). Once the group is written, and before b is
// committed or any op of the group leaves the node, call SignHead. The op
// is signed all the same when leaving it unsigned could make the group
// outgrow MaxGroupOps or MaxGroupBytes.
func (r *Realm) WriteUnsigned(b *Batch, priv ed25519.PrivateKey, body Body, wallMs int64) (*Op, *Result, error) {
	return r.write(b, priv, body, wallMs, false)
}

// SignHead signs the newest op of priv's chain if WriteUnsigned left it
// unsigned, and stages it in b again; the op keeps its hash, so nothing
// that links to it changes. It returns the op it signed, or nil.
func (r *Realm) SignHead(b *Batch, priv ed25519.PrivateKey) *Op {
	var author PublicKey
	copy(author[:], priv.Public().(ed25519.PublicKey))
	h := r.heads[author]
	if h == nil || h.op == nil {
		return nil
	}
	op := h.op
	op.sign(priv)
	b.put(r.keys.op(author, op.Seq), op.Bytes())
	h.unverified, h.unverifiedBytes, h.op = 0, 0, nil
	r.dirtyHeads = append(r.dirtyHeads, author)
	r.flush(b)
	return op
}

func (r *Realm) write(b *Batch, priv ed25519.PrivateKey, body Body, wallMs int64, sign bool) (*Op, *Result, error) {
	var author PublicKey
	copy(author[:], priv.Public().(ed25519.PublicKey))
	op := &Op{Realm: r.id, Author: author, Seq: 1, Epoch: r.acl.epoch, Body: body}
	h := r.heads[author]
	if h != nil {
		op.Seq, op.Prev = h.seq+1, h.hash
		r.clock.Observe(h.clock)
	}
	op.Clock = r.clock.Now(wallMs)
	if s, ok := body.(*Set); ok && s.Collection == MessagesCollection && s.ID == "" {
		named := *s
		named.ID = MessageID(author, op.Seq)
		body, op.Body = &named, &named
	}
	if err := validateBody(body); err != nil {
		return nil, nil, fmt.Errorf("write %s: %w", body.Kind(), err)
	}
	if _, isData := objectOf(body); isData {
		if err := r.checkObjectKey(body); err != nil {
			return nil, nil, err
		}
	}
	if isData(body.Kind()) && r.ring != nil {
		keys := r.epochKeys(op.Epoch)
		if len(keys) == 0 {
			return nil, nil, fmt.Errorf("write %s: epoch %d: %w", body.Kind(), op.Epoch, ErrNoKey)
		}
		key := keys[0]
		if c, ok := r.ring.(KeyChooser); ok && op.Epoch == r.acl.epoch {
			if k := c.SealingKey(op.Epoch, r.acl.keys); k != nil {
				key = k
			}
		}
		if err := op.seal(key); err != nil {
			return nil, nil, fmt.Errorf("write %s: %w", body.Kind(), err)
		}
	}
	if err := op.encode(); err != nil {
		return nil, nil, fmt.Errorf("write %s: %w", body.Kind(), err)
	}
	// The encoding holds the sealed form; what apply needs is the body
	// inside, which is at hand: there is no need to open the seal again.
	op.Body = body
	// Leave room in the group for the op that will sign it.
	if h != nil && (h.unverified+2 > MaxGroupOps || h.unverifiedBytes+len(op.raw)+MaxOpSize > MaxGroupBytes) {
		sign = true
	}
	if sign {
		op.sign(priv)
	}
	defer r.flush(b)
	res, err := r.apply(b, op, wallMs, trusted)
	if err != nil {
		return nil, nil, fmt.Errorf("write %s: %w", body.Kind(), err)
	}
	return op, res, nil
}

func (r *Realm) checkObjectKey(body Body) error {
	k, _ := objectOf(body)
	if k.Collection == "" || k.ID == "" || len(k.Collection) > MaxNameSize || len(k.ID) > MaxNameSize {
		return fmt.Errorf("write %s: %w: object %q/%q", body.Kind(), ErrMalformed, k.Collection, k.ID)
	}
	return nil
}

// Apply checks a received op and, when it is valid and next in its
// author's chain, stores it and applies its effects, staging the writes
// in b. An op ahead of a gap, or stamped more than MaxClockSkew ahead of
// wallMs, is held back in memory (Result.Held) and applied when the gap
// fills or Tick passes its time; the caller should fetch the missing range
// (Missing tells it). A duplicate is counted in Result.Dups and changes
// nothing. Any error leaves the realm as it was.
func (r *Realm) Apply(b *Batch, op *Op, wallMs int64) (*Result, error) {
	defer r.flush(b)
	return r.apply(b, op, wallMs, gossip)
}

// ApplyRange applies ops that continue one author's chain, in seq order. It
// checks that they link by hash to each other and to the chain held here,
// and checks the last op's signature, which vouches for the rest, and one
// signature per MaxGroupOps ops or MaxGroupBytes bytes (see checkVouched).
// An op its author's role does not allow is stored without effect (see
// apply). On error, the ops before the failing one stay applied (in b and
// in the returned result).
func (r *Realm) ApplyRange(b *Batch, ops []*Op, wallMs int64) (*Result, error) {
	if len(ops) > MaxRangeOps {
		return &Result{}, fmt.Errorf("apply range: %w: %d ops", ErrTooLarge, len(ops))
	}
	return r.applyChain(b, ops, wallMs, ranged)
}

// ApplyGroup applies a group of ops from gossip: ops that continue one
// author's chain, at most MaxGroupOps, of which the last is signed and
// vouches for the rest, as a single signed op vouches for itself. Each op
// is judged as Apply judges a single op; on error, the ops before the
// failing one stay applied.
func (r *Realm) ApplyGroup(b *Batch, ops []*Op, wallMs int64) (*Result, error) {
	if len(ops) > MaxGroupOps {
		return &Result{}, fmt.Errorf("apply group: %w: %d ops", ErrTooLarge, len(ops))
	}
	return r.applyChain(b, ops, wallMs, grouped)
}

func (r *Realm) applyChain(b *Batch, ops []*Op, wallMs int64, src how) (*Result, error) {
	if len(ops) == 0 {
		return &Result{}, nil
	}
	author := ops[0].Author
	for i, op := range ops {
		if op.Author != author || i > 0 && (op.Seq != ops[i-1].Seq+1 || op.Prev != ops[i-1].Hash()) {
			return &Result{}, fmt.Errorf("apply %s: op %d: %w", src, i, ErrBrokenChain)
		}
	}
	if err := r.checkVouched(ops); err != nil {
		return &Result{}, fmt.Errorf("apply %s: %w", src, err)
	}
	defer r.flush(b)
	total := &Result{}
	for i, op := range ops {
		res, err := r.apply(b, op, wallMs, src)
		total.merge(res)
		if err != nil {
			var eq *Equivocation
			if errors.As(err, &eq) && eq.Got == op {
				eq.GotRest = vouchers(op, ops[i+1:])
			}
			return total, fmt.Errorf("apply %s: %w", src, err)
		}
	}
	return total, nil
}

// VouchedPrefix returns how many of ops, which continue one chain, can
// travel as a range: up to and including the last op whose signature
// holds. The ops after it are unsigned ops of a group whose signed op is
// not here; nothing here vouches for them yet.
func VouchedPrefix(ops []*Op) int {
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].vouches() {
			return i + 1
		}
	}
	return 0
}

// checkVouched checks the signatures of ops, which continue one chain:
// the last op's must hold, since it vouches for the rest, and so must one
// at least every MaxGroupOps ops and MaxGroupBytes bytes, counting from
// the newest op here whose signature is known to hold. Every group an
// honest author writes is that small, so this costs a signature check per
// group at most, and it keeps what a replica stores such that each op has
// a voucher within a group's reach: the bound that evidence and catch-up
// ranges rely on. Of the signed ops inside ops, it checks only as many as
// it needs, latest first within each reach.
func (r *Realm) checkVouched(ops []*Op) error {
	runOps, runBytes := 0, 0
	if h := r.heads[ops[0].Author]; h != nil && h.seq+1 == ops[0].Seq {
		runOps, runBytes = h.unverified, h.unverifiedBytes
	}
	from := 0 // ops[from:] follow the newest op known to be vouched for
	for i, op := range ops {
		runOps++
		runBytes += len(op.raw)
		if runOps <= MaxGroupOps && runBytes <= MaxGroupBytes {
			continue
		}
		// The reach is exceeded at i: one of ops[from:i] must vouch.
		j := i - 1
		for j >= from && !ops[j].vouches() {
			j--
		}
		if j < from {
			return fmt.Errorf("%w: no signature holds within %d ops of op %s", ErrBadSignature, MaxGroupOps, op)
		}
		from, runOps, runBytes = j+1, 0, 0
		for _, o := range ops[from : i+1] {
			runOps++
			runBytes += len(o.raw)
		}
		if runOps > MaxGroupOps || runBytes > MaxGroupBytes {
			return fmt.Errorf("%w: no signature holds within %d ops of op %s", ErrBadSignature, MaxGroupOps, op)
		}
	}
	return ops[len(ops)-1].VerifySignature()
}

// vouchers returns the ops of rest, which follow op in its chain, up to
// the first whose signature holds: the ops that vouch for op. It returns
// nil when op's own signature holds.
func vouchers(op *Op, rest []*Op) []*Op {
	if op.vouches() {
		return nil
	}
	for i, next := range rest {
		if i == MaxGroupOps {
			break
		}
		if next.vouches() {
			return rest[: i+1 : i+1]
		}
	}
	return nil
}

func (t *Result) merge(r *Result) {
	if r == nil {
		return
	}
	t.Stored = append(t.Stored, r.Stored...)
	for _, k := range r.Objects {
		t.addObject(k)
	}
	t.Members = t.Members || r.Members
	t.Held += r.Held
	t.Dups += r.Dups
	t.Void += r.Void
}

// heldOp is an op held back, with where it came from.
type heldOp struct {
	op  *Op
	src how
}

// how says where an op comes from, which decides what apply checks.
type how uint8

const (
	gossip  how = iota // a single received op: check everything
	grouped            // part of a gossip group already vouched for
	ranged             // part of a catch-up range already vouched for
	trusted            // made here
)

func (h how) String() string {
	return [...]string{"op", "group", "range", "write"}[h]
}

// apply is Apply for ops from any source. Ops of a catch-up range that
// their author's role does not allow are stored without effect (and
// counted in Result.Void) rather than refused: the chain must stay whole
// for the author's later ops, which a later role may allow. A single op is
// refused instead, so gossip never spreads it.
func (r *Realm) apply(b *Batch, op *Op, wallMs int64, src how) (*Result, error) {
	verify := src == gossip
	res := &Result{}
	if err := r.checkRealm(op); err != nil {
		return res, err
	}
	h := r.heads[op.Author]
	var have uint64
	if h != nil {
		have = h.seq
	}
	// Ops made here are never held for their clock: after the wall clock
	// steps back, the realm's clock runs ahead of it, and a local write
	// must still land (other replicas hold it until their clocks catch up).
	future := src != trusted && op.Clock.WallMs() > wallMs+MaxClockSkew
	switch {
	case op.Seq <= have:
		return res, r.checkDuplicate(b, op, src, res)
	case op.Seq > have+1 || future || r.locked(op):
		if verify {
			if err := op.VerifySignature(); err != nil {
				return res, err
			}
		}
		// Only authors who have been members may fill the queue; before
		// the genesis op is here, nobody can tell (see pruneStrangers).
		if r.genesis != nil && r.acl.members[op.Author] == nil {
			return res, fmt.Errorf("op %s: %w (held back, and not known here)", op, ErrNotMember)
		}
		return res, r.hold(op, src, res)
	}
	if h != nil && op.Prev != h.hash {
		return res, fmt.Errorf("op %s: %w", op, ErrBrokenChain)
	}
	if h != nil && op.Clock <= h.clock {
		return res, fmt.Errorf("op %s: %w", op, ErrClock)
	}
	if verify {
		if err := op.VerifySignature(); err != nil {
			return res, err
		}
	}
	if err := r.checkHeld(op); err != nil {
		return res, err
	}
	if err := r.openOp(op); err != nil {
		return res, err
	}
	if err := r.permit(op); err != nil {
		if src != ranged || r.acl.members[op.Author] == nil {
			return res, err
		}
		res.Void++
	}
	r.dropPending(op)
	if err := r.store(b, op, res); err != nil {
		return res, err
	}
	r.release(b, op.Author, wallMs, res)
	return res, nil
}

func (r *Realm) checkRealm(op *Op) error {
	if g, ok := op.Body.(*Genesis); ok {
		_ = g
		if op.Hash() != r.id {
			return fmt.Errorf("op %s: %w", op, ErrWrongRealm)
		}
		return nil
	}
	if op.Realm != r.id {
		return fmt.Errorf("op %s: %w", op, ErrWrongRealm)
	}
	if _, isData := objectOf(op.Body); isData {
		return r.checkObjectKey(op.Body)
	}
	return nil
}

// Equivocation is the error for an op that conflicts with one held here
// with the same author and seq. Both ops are vouched for by the author's
// signature, so the pair is proof anyone can check (see
// Realm.ApplyEvidence): a signed op by its own, an unsigned one by the ops
// that follow it in its group, up to the signed one.
type Equivocation struct {
	Held, Got         *Op
	HeldRest, GotRest []*Op // the ops that vouch for an unsigned Held or Got
}

func (e *Equivocation) Error() string {
	return fmt.Sprintf("%v: %s has %s and %s", ErrEquivocation, e.Held,
		e.Held.Hash().String()[:8], e.Got.Hash().String()[:8])
}

// Unwrap lets errors.Is match ErrEquivocation.
func (e *Equivocation) Unwrap() error { return ErrEquivocation }

func (r *Realm) checkDuplicate(b *Batch, op *Op, src how, res *Result) error {
	v := view{r.st, b}
	held, err := r.op(v, op.Author, op.Seq)
	if err != nil {
		return fmt.Errorf("op %s: %w", op, err)
	}
	if held.Hash() == op.Hash() {
		res.Dups++
		return nil
	}
	if src == gossip {
		if err := op.VerifySignature(); err != nil {
			return err
		}
	}
	return &Equivocation{Held: held, HeldRest: r.storedVouchers(v, held), Got: op}
}

// storedVouchers returns the stored ops that vouch for a stored op (see
// vouchers), or nil when op is signed or they are not all here.
func (r *Realm) storedVouchers(v view, op *Op) []*Op {
	var rest []*Op
	for prev := op; !prev.vouches(); {
		h := r.heads[op.Author]
		if h == nil || prev.Seq >= h.seq || len(rest) >= MaxGroupOps {
			return nil
		}
		next, err := r.op(v, op.Author, prev.Seq+1)
		if err != nil {
			return nil
		}
		rest = append(rest, next)
		prev = next
	}
	return rest
}

// heldVouchers returns the held ops that vouch for a held op (see
// vouchers), or nil when op is signed or they are not all held.
func (r *Realm) heldVouchers(op *Op) []*Op {
	var rest []*Op
	for prev := op; !prev.vouches(); {
		next, ok := r.pending[op.Author][prev.Seq+1]
		if !ok || next.op.Prev != prev.Hash() || len(rest) >= MaxGroupOps {
			return nil
		}
		rest = append(rest, next.op)
		prev = next.op
	}
	return rest
}

// permit checks the op against the membership as it stands.
func (r *Realm) permit(op *Op) error {
	if op.Kind() == KindGenesis {
		return nil
	}
	if r.genesis == nil {
		return fmt.Errorf("op %s: %w (realm genesis not here yet)", op, ErrNotMember)
	}
	m := r.acl.members[op.Author]
	if m == nil || r.acl.roleAt(op.Author, op.Seq, r.frozen) == RoleNone {
		return fmt.Errorf("op %s: %w", op, ErrNotMember)
	}
	if !r.acl.allows(op, r.frozen) {
		return fmt.Errorf("op %s by a %s: %w", op, r.acl.roleAt(op.Author, op.Seq, r.frozen), ErrNotPermitted)
	}
	return nil
}

// checkHeld compares op with an op held back at its position: two ops
// signed at one position are an equivocation. A held copy that no
// signature vouches for (its own, or that of the held ops after it in its
// group) is dropped instead: it came inside a range whose end is not here.
func (r *Realm) checkHeld(op *Op) error {
	held, ok := r.pending[op.Author][op.Seq]
	if !ok || held.op.Hash() == op.Hash() {
		return nil
	}
	rest := r.heldVouchers(held.op)
	if vouched(held.op, rest) != nil {
		r.dropPending(op)
		return nil
	}
	return &Equivocation{Held: held.op, HeldRest: rest, Got: op}
}

func (r *Realm) hold(op *Op, src how, res *Result) error {
	byseq := r.pending[op.Author]
	if byseq == nil {
		byseq = make(map[uint64]heldOp)
		r.pending[op.Author] = byseq
	}
	if old, ok := byseq[op.Seq]; ok {
		if old.op.Hash() == op.Hash() {
			if src == ranged {
				// A range vouches for its ops: judge this one as one.
				byseq[op.Seq] = heldOp{old.op, ranged}
			}
			res.Dups++
			return nil
		}
		return &Equivocation{Held: old.op, HeldRest: r.heldVouchers(old.op), Got: op}
	}
	if r.npend >= MaxPending || r.nbytes+len(op.raw) > MaxPendingBytes {
		return fmt.Errorf("op %s: %w", op, ErrPendingFull)
	}
	byseq[op.Seq] = heldOp{op, src}
	r.npend++
	r.nbytes += len(op.raw)
	res.Held++
	return nil
}

// release applies held ops of author that have become next in line.
func (r *Realm) release(b *Batch, author PublicKey, wallMs int64, res *Result) {
	for {
		h := r.heads[author]
		next, ok := r.pending[author][h.seq+1]
		if !ok || next.op.Clock.WallMs() > wallMs+MaxClockSkew || r.locked(next.op) {
			return
		}
		r.dropPending(next.op)
		sub, err := r.apply(b, next.op, wallMs, next.src)
		res.merge(sub)
		if err != nil {
			// The held op was bad after all; the ops behind it stay
			// held until a good copy arrives.
			return
		}
	}
}

// pruneStrangers drops held ops of authors who have never been members.
// It runs whenever the membership changes.
func (r *Realm) pruneStrangers() {
	for a, byseq := range r.pending {
		if r.acl.members[a] == nil {
			for _, h := range byseq {
				r.npend--
				r.nbytes -= len(h.op.raw)
			}
			delete(r.pending, a)
		}
	}
}

func (r *Realm) dropPending(op *Op) {
	if byseq := r.pending[op.Author]; byseq != nil {
		if held, ok := byseq[op.Seq]; ok {
			delete(byseq, op.Seq)
			r.npend--
			r.nbytes -= len(held.op.raw)
		}
		if len(byseq) == 0 {
			delete(r.pending, op.Author)
		}
	}
}

// Tick applies held-back ops whose clocks the wall clock has caught up with.
// Call it every few seconds.
func (r *Realm) Tick(b *Batch, wallMs int64) *Result {
	defer r.flush(b)
	res := &Result{}
	authors := make([]PublicKey, 0, len(r.pending))
	for a := range r.pending {
		authors = append(authors, a)
	}
	slices.SortFunc(authors, func(x, y PublicKey) int { return bytes.Compare(x[:], y[:]) })
	for _, a := range authors {
		first, ok := r.pending[a][1]
		switch {
		case r.heads[a] != nil:
			r.release(b, a, wallMs, res)
		case ok && first.op.Clock.WallMs() <= wallMs+MaxClockSkew && !r.locked(first.op):
			r.dropPending(first.op)
			sub, _ := r.apply(b, first.op, wallMs, first.src)
			res.merge(sub)
		}
	}
	return res
}

// Missing returns, per author, the first seq this replica lacks in front
// of ops it holds back: the start of each range to fetch from a peer.
func (r *Realm) Missing() map[PublicKey]uint64 {
	out := make(map[PublicKey]uint64)
	for a := range r.pending {
		var have uint64
		if h := r.heads[a]; h != nil {
			have = h.seq
		}
		out[a] = have + 1
	}
	return out
}

// op reads the op at seq of author's chain.
func (r *Realm) op(v view, author PublicKey, seq uint64) (*Op, error) {
	raw, err := v.get(r.keys.op(author, seq))
	if err != nil {
		return nil, fmt.Errorf("read op %s#%d: %w", author.Short(), seq, err)
	}
	op, err := DecodeOp(slices.Clone(raw))
	if err == nil {
		err = r.openOp(op)
	}
	if err != nil {
		return nil, fmt.Errorf("read op %s#%d: %w", author.Short(), seq, err)
	}
	return op, nil
}

// openOp opens a sealed op with its epoch's key, and checks the object it
// names as the checks before could not.
func (r *Realm) openOp(op *Op) error {
	if _, ok := op.Body.(*Sealed); !ok {
		return nil
	}
	keys := r.epochKeys(op.Epoch)
	if len(keys) == 0 {
		return fmt.Errorf("op %s: epoch %d: %w", op, op.Epoch, ErrNoKey)
	}
	if err := op.open(keys); err != nil {
		return err
	}
	return r.checkObjectKey(op.Body)
}

// Ops calls fn with the ops of author's chain from seq from on, in seq
// order, until fn returns false or the chain held here ends. Like Op, it
// reads storage only and may be called while another call runs; it reads
// with one scan, where Op costs a lookup per op.
func (r *Realm) Ops(author PublicKey, from uint64, fn func(*Op) bool) error {
	prefix := r.keys.build("o/", string(author[:]), "")
	var derr error
	err := r.st.Scan(prefix, r.keys.op(author, max(from, 1)), func(_ string, raw []byte) bool {
		var op *Op
		if op, derr = DecodeOp(slices.Clone(raw)); derr != nil {
			return false
		}
		return fn(op)
	})
	if err = errors.Join(err, derr); err != nil {
		return fmt.Errorf("read ops of %s from %d: %w", author.Short(), from, err)
	}
	return nil
}

// Op returns the op at seq of author's chain, or ErrNotFound. It reads
// storage only, and unlike the other methods may be called while another
// call runs.
func (r *Realm) Op(author PublicKey, seq uint64) (*Op, error) {
	return r.op(view{r.st, NewBatch()}, author, seq)
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

func hasPrefix(s, p string) bool { return strings.HasPrefix(s, p) }
