// Package store is the durable storage under the crdt engine: an ordered
// key-value store with text keys, kept in pebble on disk (or in a map for
// tests) behind the go-datastore interface, that implements crdt.Storage.
//
// # Keys
//
// The engine's keys are printable text such as "r/<realm>/o/<author>/<seq>"
// (see crdt/keys.go). Each is stored under the go-datastore key "/"+key, and
// the leading "/" is stripped again when scanning.
//
// # Group commit
//
// A batch is written as soon as it is queued, unsynced: pebble puts it in
// its memtable, where Get and Scan see it, and appends it to its write-ahead
// log. A sync of that log then makes every batch written so far durable at
// once. The sync is run by a waiter: Wait on a batch that is not durable
// yet, with no sync running, syncs everything written so far and
// acknowledges all of it; a waiter that finds a sync running waits for it
// and looks again. Batches written while a sync runs wait for the next
// one. Concurrent writers thus share syncs, the acknowledgement of a lone
// writer needs no hand-over to another goroutine, and a writer holding a
// lock (a Realm's) only holds it for the write, never for the sync. A
// syncer goroutine, started by Open and stopped by Close, syncs batches
// that nobody waits for (a peer's ops, say) within a few milliseconds.
//
// The log holds batches in the order they were written, and a sync makes
// everything before it durable, so a crash can lose only a suffix of the
// batches, and only batches that nobody was told were durable. If a write
// or a sync fails, the batches waiting get the error, and so does every
// later Commit: close the Store and open it again.
//
// # The caller's duties, in order
//
//  1. Open one Store per data dir; this package takes no lock on the dir.
//  2. Hand every crdt.Batch to Commit (or Queue, then Wait), and
//     acknowledge nothing that depends on it until that returns nil.
//  3. Queue the batches of one Realm in the order the Realm made them:
//     under the lock that serialises the Realm's calls.
//  4. If Wait fails because its context ended, the batch may still become
//     durable; treat it as not acknowledged.
//  5. If a commit fails otherwise, drop every Realm open on this Store,
//     then Close it and Open it again.
//  6. Close the Store once nothing uses it any more.
package store
