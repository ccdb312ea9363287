// Package store is the durable storage under the crdt engine: an ordered
// key-value store with text keys, kept in pebble on disk (or in a map for
// tests), that implements crdt.Storage.
//
// # Keys
//
// The engine's keys are printable text such as "r/<realm>/o/<author>/<seq>"
// (see crdt/keys.go). Each is stored under the go-datastore key "/"+key, and
// the leading "/" is stripped again when scanning.
//
// # Group commit
//
// Commit returns once a batch is durably on disk. One committer goroutine,
// started by Open and stopped by Close, takes every batch queued so far,
// writes them into one datastore batch in queue order and commits it with a
// single fsync, then acknowledges all of them; so concurrent writers share
// one sync instead of paying one each. If that write fails, every batch of
// the group gets the same error, and so does every later Commit: close the
// Store and open it again.
//
// # Reading batches in flight
//
// The engine reads its own earlier writes, committed or not (see the
// Storage interface in crdt/storage.go). A batch therefore enters an
// in-memory overlay when Commit queues it, before any write to disk: Get
// and Scan read the overlay first and the datastore under it. A key holds
// the value (or delete mark) of the newest batch in flight that wrote it,
// and leaves the overlay only when that batch is on disk; an older batch
// reaching disk leaves a newer value in place.
//
// # The caller's duties, in order
//
//  1. Open one Store per data dir; this package takes no lock on the dir.
//  2. Hand every crdt.Batch to Commit, and acknowledge nothing that
//     depends on it until Commit returns nil.
//  3. If Commit fails because its context ended, the batch is still queued
//     and may reach disk later; treat it as not acknowledged.
//  4. If Commit fails otherwise, drop every Realm open on this Store, then
//     Close it and Open it again.
//  5. Close the Store once nothing uses it any more.
package store
