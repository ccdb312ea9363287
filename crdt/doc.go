// Package crdt decides what a realm's state is.
//
// It is a pure, deterministic core: it does no I/O of its own, starts no
// goroutine and never reads the clock. Wall time comes in as an argument
// (milliseconds since the Unix epoch), randomness too (the nonce of a new
// realm), and persisted state is read through the Storage interface and
// written back only as a Batch that the caller commits.
//
// # Ops
//
// Every change to a realm is an Op: a header (realm id, author key, seq,
// hash of the author's previous op, hybrid logical clock, key epoch) and a
// Body of one Kind, signed by the author's ed25519 key. The encoding is
// canonical (fixed-width big-endian integers, length-prefixed strings,
// sorted lists): one value has one encoding, so hashes and signatures agree
// on every machine. An op's hash is the SHA-256 of its encoding without
// the signature, which is what the signature covers. A realm's id is the
// hash of its genesis op.
//
// Each author's ops in a realm form a chain numbered 1..n, each naming the
// hash of the one before. A single op is checked by its signature. A
// contiguous range is checked by its hash links and the last op's signature
// only (ApplyRange): that signature covers the hash of every op before it.
//
// The same rule lets an author sign a group of ops once. Ops written
// together (WriteUnsigned, then SignHead) are linked as usual, but only the
// last carries a signature; the others carry none (Op.Signed) and are
// vouched for by it. A group holds at most MaxGroupOps ops and
// MaxGroupBytes bytes. An unsigned op never travels alone: gossip carries
// the whole group (ApplyGroup, which judges each op as Apply judges one),
// and a catch-up range ends at a signed op (VouchedPrefix). Signing is the
// largest cost of a local write, so under load a group costs little more
// than one op.
//
// Two different ops with one (author, seq) are an equivocation: Apply
// returns an *Equivocation holding both, each with the ops that vouch for
// it when it is unsigned, and ApplyEvidence records it so that none of the
// author's ops from that seq on has any effect, on every replica that has
// seen the pair.
//
// An op of a kind this version does not know decodes as *Unknown; it is
// stored and passed on like any other, needs the writer role, and changes
// no state here, so it does not change the digest either.
//
// # Realm order and merge rules
//
// Ops are ordered by Stamp: (clock, author, seq). Clocks strictly increase
// along a chain, so no two ops share a stamp. An object's state is defined
// as the fold of its permitted ops in realm order:
//
//   - Set writes fields; each field is a last-writer-wins register, so the
//     write with the greatest (clock, author) wins.
//   - Delete clears the object and leaves a tombstone at its stamp. A later
//     write brings the object back with only what that write sets; a write
//     older than the tombstone stays deleted.
//   - Counter adds to a counter field: counters sum every addition since the
//     last delete.
//   - SetAdd adds an element, tagged with the op's hash; SetRemove removes
//     the tags its author had seen. An addition the remover had not seen
//     survives: sets are add-wins.
//   - Chat messages are objects in the "messages" collection. Messages lists
//     them by the stamp of the op that created them (the first write since
//     the last delete), the same order on every replica.
//   - A writer may leave a new message's id to the engine (a Set of the
//     messages collection with an empty ID): MessageID derives it from the
//     op's author and seq. Such a message's own creating op is its creator
//     whatever else touched it, even ops stamped before it, so no other
//     member can claim a message, or move it in the order, by writing to
//     its id first.
//
// The engine applies an op to the stored object directly when it sorts
// after everything folded in so far, or when it commutes with what it
// missed (field writes and counter additions newer than the tombstone);
// otherwise it folds the object again from its ops. Either way the result
// is the fold, so the state is a function of the set of ops alone. The op
// that creates a message the engine named does not even read: nothing of
// it can be stored yet, unless an op that did not create it came first,
// and each such op leaves a mark under the realm's "y/" keys that makes
// the creating op read after all (a mark too many costs only a read).
//
// # Membership
//
// Membership lives in the log. The genesis author is the first admin.
// Roles are ordered reader < writer < admin; a member's role is a function
// of the seq of its own chain, so every replica judges each op the same way
// whenever it arrives:
//
//   - Only admins grant, change roles, revoke, revoke offers, record
//     redemptions and start key epochs. Writers also write data. Readers
//     write nothing but their own Leave.
//   - Grant admits a member from FromSeq of its chain (1 for a newcomer;
//     past the member's own head when it comes back, which the acceptance
//     handshake tells the admin). Granting a current member changes no
//     role.
//   - An offer's uses are the distinct members that grants and
//     redemptions naming it admitted: two admins that honour one
//     invitee's acceptance at once (it presents to all that the offer
//     names) use the offer once, not twice.
//   - ChangeRole gives a new role from FromSeq on (never before the start of
//     the member's current role).
//   - Revoke names LastSeq, the last op of the member's chain that stays
//     valid; Leave ends the author's own membership after itself. Every
//     replica keeps exactly those ops of the member, whatever order it saw
//     things in, and undoes what it had applied of later ones.
//
// Membership ops are replayed in realm order, each judged by its author's
// role at its seq as the replay stands. When a revoke, leave or role change
// takes away the role that a membership op of that member needed, an op
// the replay had already applied (earlier in realm order, at or after the
// change's seq in the member's chain, so the changing admin had not seen
// it), the earliest such op in realm order is marked void and the replay
// starts again. Only that one: voiding it can undo the change that took
// the role (in a cycle of admins revoking one another, say), and then the
// member's later ops keep their effect. Void marks only accumulate, so
// this ends. A revoke or role change that a member makes of
// itself takes effect after the op that makes it, so that op keeps its
// effect. The rule for concurrent admin actions
// follows: when two admins revoke each other without having seen the
// other's revoke, the revoke that sorts first in realm order (the earlier
// clock; the smaller author key on a tie) takes effect, and the other, made
// by a member already cut off at that seq, does not.
//
// A single op (from gossip) that its author's role does not allow is
// refused with ErrNotPermitted or ErrNotMember. The same op inside a catch-up
// range is stored without effect (Result.Void) instead, provided its author
// has ever been a member, so that the chain stays whole and the author's
// later ops, which a later grant may allow, can follow it.
//
// # Sealed content
//
// A realm given a Keyring (SetKeyring) seals the bodies of data ops (set,
// delete, counter, set add and remove) that Write makes: the body becomes
// a Sealed body, XChaCha20-Poly1305 under the key of the op's epoch, with
// the op's header and the inner kind as authenticated data and a nonce
// derived from key, header and body. The header, the kind byte and the
// signature stay in the clear, so every member checks chains and
// signatures, and membership ops (which every replica must judge, and
// which carry the keys of new epochs sealed to each member) are never
// sealed. A received sealed op is opened once it is next in its chain; if
// no key the keyring has for its epoch opens it, it is held back like an
// op ahead of a gap, and Tick applies it once a key that opens it is
// there (an epoch can have two keys when two admins start it at once, and
// the second may come with a later range). KeysWanted names the epochs
// whose keys such held ops wait for, and KeyOpens tells whether a key
// from elsewhere opens one of them. Write seals with the first key of the
// epoch, or with the one a keyring that is a KeyChooser picks from the
// boxes of the current Epoch op. A keyring that is also an
// EpochObserver hears of each Epoch op as it is stored. Stored ops keep
// their sealed encoding; the materialised state is in the clear, on the
// member's own disk.
//
// # Clocks
//
// Timestamps are hybrid logical clocks: wall milliseconds in the high 48
// bits and a counter in the low 16. Every op applied moves the realm's
// clock past its own, so local writes sort after everything seen. An op
// stamped more than MaxClockSkew ahead of the wall time passed in is held
// back in memory, neither applied nor dropped, until Tick sees the wall
// clock catch up; since no op is ever judged by the local clock otherwise,
// a skewed clock delays ops but never makes replicas differ for good. Ops
// made here are never held: after the wall clock steps back, Write stamps
// past the realm's clock, and other replicas hold the op for a while.
//
// Ops ahead of a gap in their chain are held back too. The queue is bounded
// (MaxPending ops, MaxPendingBytes bytes) and only authors who have been
// members may use it: once the genesis op is here, a stranger's op ahead of
// a gap is refused with ErrNotMember, and whatever strangers had queued
// before is dropped. A held op keeps where it came from, so an op of a
// catch-up range is judged as one when its gap fills. An op that conflicts
// with a held one at the same position is an *Equivocation.
//
// # Digest
//
// Digest hashes the visible state: every visible object (its fields,
// counters, set elements and creating stamp, which fixes message order),
// the members with their roles, names and times of joining, offer use
// counts and revocations, and the key epoch with its sealed keys. It is kept incrementally (an XOR of per-object hashes)
// and is equal on two replicas exactly when their queries show the same.
//
// # The caller's duties, in order
//
//  1. Serialise calls on one Realm; it is not safe for concurrent use.
//  2. Decode bytes from the network with DecodeOp, which enforces
//     MaxOpSize and the canonical form, before passing ops in.
//  3. Pass a fresh Batch to each call (or one batch to several calls), and
//     commit it to the Storage atomically, durably where acknowledgements
//     depend on it, before telling anyone the op was applied.
//  4. Keep every Batch the engine handed out readable through Storage until
//     it is committed: the engine reads its own earlier writes.
//  5. If a commit fails, drop the Realm and Open it again: its memory
//     already holds what the batch said.
//  6. When Result.Held is non-zero, fetch the ranges that Missing names
//     from a peer and pass them to ApplyRange; call Tick every few seconds.
//  7. On an *Equivocation, pass ApplyEvidence the pair, and pass the pair on;
//     Evidence lists the pairs held (kept across restarts) for peers that
//     connect later.
//  8. Publish the ops in Result.Stored that were made here (Write), a
//     group at a time; call SignHead after WriteUnsigned before committing
//     or publishing anything.
//
// Errors from decoding and from checking an op (ErrMalformed, ErrTooLarge,
// ErrBadSignature, ErrWrongRealm, ErrBrokenChain, ErrNotMember,
// ErrNotPermitted, ErrEquivocation, ErrClock) leave the realm unchanged;
// ApplyRange keeps the ops before the one that failed, as a range of one
// op at a time would.
package crdt
