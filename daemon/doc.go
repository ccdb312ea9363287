// Package daemon is the realmsync node: one libp2p host that keeps the
// realms in its data dir in step with the other members' nodes, with no
// server anywhere.
//
// # The parts
//
// A Node owns a libp2p host (TCP and QUIC, Noise and TLS, yamux, a
// connection manager, resource limits, hole punching, AutoNAT, the
// circuit-relay client, mDNS when asked), one gossipsub router, the
// datastore (package store) and one replica per realm held. The identity
// key lives in the data dir and is also the key the node signs ops with;
// a lock on the dir keeps a second node out.
//
// # A local write
//
// Write queues the body. While the store is syncing, a write could not
// join that sync, so it waits for the sync to end (unless enough writes
// are queued to make a group already); then whoever holds the
// realm's lock next applies every queued body as one group
// (crdt.Realm.WriteUnsigned, then SignHead: one signature, on the last op)
// in one batch, writes the batch to the store and lets the lock go. Each
// writer then waits for the store's shared sync, and only then returns: an
// acknowledged write is on disk. The writers then publish the groups in
// chain order, each once it is durable, one gossip message per group.
//
// # Gossip
//
// Each realm has one topic, "/rs/2/" and the first 12 bytes of the realm
// id in unpadded base64url (the name travels in every message). Pubsub
// signs nothing and names no author (ops carry their own signatures), and
// a message's id is the SHA-256 of its bytes, so a duplicate is dropped
// before it is decoded. A message carries one group of ops of one chain,
// the last one signed: a single op as its own bytes (they begin with the
// op version, 2), two or more (at most crdt.MaxGroupOps) as each op's
// uvarint length and bytes (the first byte is then 0x80 or more). The topic
// validator rejects unread what a non-member sends, then decodes the
// group and applies it (crdt.Realm.ApplyGroup checks the links and the
// last op's signature, then each op's author, role and chain position as
// for a single op). An op that breaks the rules outright is rejected, which
// pubsub's score holds against the peer that sent it: a handful of
// rejected ops and nothing it sends is heard for a while. An op refused
// for its author's membership or role is ignored instead, since the grant
// that allows it may not be here yet, and catch-up is asked for it; a
// duplicate is ignored; an op ahead of a gap is held back by the engine,
// and a gap still open after gapWait is pulled from the sender.
//
// Only members take part in a realm's topic. The subscription filter
// records a peer's subscription only if the peer is a member here (or the
// realm's genesis op has not arrived, so it knows no members and has
// nothing to send); the peer filter keeps non-members out of the mesh and
// of gossip. When a member is removed, its connection is closed and its
// subscription goes with it. Pubsub hears a peer's subscriptions once per
// connection, so a new member whose subscription was refused before its
// grant arrived gets a fresh connection.
//
// # Catch-up
//
// Catch-up runs over the protocol "/realmsync/sync/2". The node that wants
// ops (the asker) opens a stream to a peer and sends one ask frame; the
// peer answers with range frames and ends with a done frame; the stream
// closes. It runs when a member connects, every Config.SyncInterval with
// each connected member, when a gap has stayed open, and every second
// while a realm waits for its genesis op. At most one catch-up per peer
// runs at a time; asking again while one runs makes it go once more.
//
// A frame is a big-endian uint32 length n (1 ≤ n ≤ maxFrame, 2 MiB), a
// type byte, and n-1 bytes of payload:
//
//	ask   (1): version (1), flags (1: bit 0 push, the others zero), realm
//	           count (uint16, ≤ 4096), then per realm:
//	           realm id (32), author count (uint32, ≤ 65536), then per
//	           author: author key (32), highest contiguous seq (uint64)
//	range (2): realm id (32), op count (uint16, 1..1024), then per op:
//	           length (uint32, ≤ crdt.MaxOpSize) and the op's bytes
//	done  (3): empty
//
// Gossip does not carry what catch-up brought, nor what was written while
// no member was in the topic: then the node "spreads" (at most once a
// second): it asks each connected member with the push flag, and a peer
// that sees in a pushed ask that the asker holds ops it lacks pulls from
// the asker in turn.
//
// The peer answers only for realms in which the asker is a member, and
// says nothing of the others. For each author it holds more of than the
// asker, it sends the missing ops in seq order, in ranges of about 768
// ops or 1 MiB, each ending at an op whose signature holds (a range that
// is full goes on to the end of its group, never past 1024 ops); the
// unsigned end of a group whose signed op is not here yet is not sent,
// nor are this node's own ops that are not yet on disk (a crash could
// undo them, and the node would then write other ops at their seqs). The
// realm creator's chain goes first, since it holds the grants that admit
// the others. The asker checks each range as the engine does (hash
// links, the signature of its last op, and a signature that holds at
// least once per group's reach; see crdt.Realm.ApplyRange), applies it
// and queues it for the disk at once, so an interrupted catch-up
// resumes from what arrived, never from scratch. A range that another
// range's grant must precede is refused, and the asker runs another round
// (at most three in a row).
//
// Every read has a deadline (syncIdle, 15 s, per frame). A peer that sends
// a malformed or oversized frame, a range for a realm not asked for, a
// broken chain or a bad signature is cut off: the stream is reset, its
// connection closed, and nothing of that range is kept.
//
// # Removal notices
//
// A removed member is cut off at once, before the revoke is published, so
// gossip never brings it the revoke. The node that cut it off dials it
// once more over "/realmsync/removed/1" and sends one range frame (as in
// catch-up): the revoking admin's chain, at most 256 ops, up to the revoke
// and on to an op whose signature holds. The removed node applies it as a
// catch-up range from a member (it refuses one from anyone else), learns
// that it was removed and writes nothing more to the realm.
//
// # Members' addresses
//
// After a catch-up with a member, a node asks it over "/realmsync/addrs/1"
// (at most every two minutes while answers bring addresses) for the
// addresses of the other members of their shared realms that it is
// connected to: one message of at most 64 members and 64 KiB (addrs.go).
// The addresses of those that are members here go into the peerstore for
// an hour; the redial loop keeps up to six members of each realm
// connected, dialing those it knows addresses of, so members that joined
// through one admin find each other without it.
//
// # Acceptance
//
// An admin issues an offer (package invite) with CreateOffer; it names this
// node and up to three other admin nodes known here. The invitee's Accept
// dials every node the offer names at once and presents the offer over
// "/realmsync/accept/1": one request (the offer, the invitee's display
// name, its chain head in the realm), one response (the realm, or a
// refusal's code and detail). The first answer that is not "unreachable"
// decides; when none comes, the error lists each address tried and why it
// failed.
//
// The honouring node checks the signature, then, against the realm's log
// and in one step with the write that follows: that it is an admin itself,
// that the offer has not expired by its own clock, is not revoked and has
// uses left, that the issuer is still an admin and offers no more than it
// holds, and that the invitee is not a member already. It then appends a
// grant that names the offer, which counts as one use on every replica,
// and answers. The invitee starts holding the realm, and catch-up fills it.
//
// Uses are counted from the log, so two admin nodes that cannot reach each
// other may both honour the last use of an offer: both grants stand, both
// invitees are members, and once the log is whole every replica counts
// more uses than the offer allowed. An offer can thus be overrun by at
// most one use per group of admin nodes cut apart; a revoke, once it has
// reached a node, stops that node from honouring the offer at all.
//
// # Keys
//
// Each realm's data ops travel sealed with the key of the realm's current
// epoch (see crdt). A node keeps the keys it has under "keys/<realm>/
// <epoch>" in its datastore, never in the log in the clear. The creator
// makes the key of epoch 0; the honouring node hands every key it has to
// an invitee in the acceptance response, over the stream that libp2p
// encrypts to the invitee's key. Removing a member starts a new epoch,
// and so does a member's leaving (an admin node that sees it starts one
// after a short pause, unless another did): a fresh key, sealed to each
// remaining member (X25519 from the member's
// ed25519 key, an ephemeral key, HKDF-SHA256, XChaCha20-Poly1305) inside
// an Epoch op. Each member opens its own box when the op arrives; the
// removed member has none, and cannot read anything written in the new
// epoch, even if it receives the ops.
//
// A member admitted while another admin, not yet aware of it, started an
// epoch gets that epoch's key neither way, and its replica holds back the
// ops sealed in it (crdt.Realm.KeysWanted). The node then asks its
// connected fellow members for those epochs' keys over
// "/realmsync/keys/1" (keyask.go: one ask of up to 16 epoch numbers, one
// answer of up to 64 keys, over the encrypted stream), pausing longer
// after each round that brings nothing (2 s doubling to 2 min). Only a
// node that counts the asker a member answers, and only with keys it can
// vouch for: epoch 0's, and those an Epoch op it holds sealed to it; it
// holds such an op only with its admin's earlier ops, the revocation the
// epoch was started for among them, so a revoked member gets nothing
// (a member that left could, from a node that holds the admin's Epoch op
// but not yet the leave: a brief window). The asker keeps a key only if
// it opens an op it holds back (crdt.Realm.KeyOpens), and at most two
// fetched keys per epoch, so that a rogue member sealing its own ops with
// made-up keys cannot fill the keyring; a node seals its writes with the
// key that the realm's current Epoch op seals to it, when there is one
// (crdt.KeyChooser), so a key from elsewhere is used only by a member
// that op did not know of.
//
// # Peers
//
// Members' addresses (as identify reports them, and the address dialed)
// are kept in the datastore under "peers/<peer id>". A node dials every
// member of its realms that it is not connected to, at start and every
// two seconds, each with its own exponential backoff (1 s doubling to 5
// min); connections to members are protected from the connection
// manager's trimming. With mDNS on, members found on the local network
// are dialed too; strangers found there are left alone.
//
// # The caller's duties
//
//  1. New opens the node in Config.DataDir; a second New on the same dir
//     fails with ErrLocked.
//  2. CreateRealm and Write return only once the change is durable;
//     JoinRealm starts holding a realm this node was admitted to, and
//     catch-up fills it.
//  3. View and Changed read a realm; nothing may keep the *crdt.Realm
//     past the View call.
//  4. Close stops every goroutine, closes the host and syncs the store.
package daemon
