package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	pebbleds "github.com/ipfs/go-ds-pebble"

	"github.com/realmsync/realmsync/crdt"
)

// ErrClosed is returned by every method of a Store that has been closed.
var ErrClosed = errors.New("store closed")

// Store is an ordered key-value store with group commit; it implements
// crdt.Storage. It is safe for concurrent use.
type Store struct {
	d    ds.Batching
	scan openCursor

	mu     sync.RWMutex
	ov     *overlay
	queue  []*Pending // batches not yet taken by the committer
	gen    uint64     // number of the newest batch queued
	closed bool
	failed error // set by a failed commit; later commits fail too

	readers sync.WaitGroup // Get and Scan calls reading d
	wake    chan struct{}  // buffered 1: the queue is not empty
	stop    chan struct{}  // closed by Close
	done    chan struct{}  // closed when the committer has ended
}

var _ crdt.Storage = (*Store)(nil)

// Open opens (or creates) a pebble store in dir and starts its committer.
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	opts = opts.withDefaults()
	wo := pebble.Sync
	if opts.NoSync {
		wo = pebble.NoSync
	}
	po := &pebble.Options{
		MemTableSize:                uint64(opts.MemTableSize),
		MemTableStopWritesThreshold: memTables,
		FormatMajorVersion:          pebble.FormatNewest,
	}
	// Every write of a new object or message first looks for the key it
	// is about to create; bloom filters answer most such misses without
	// reading a data block. Level 0's policy carries to the levels below.
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	// Pebble charges its memtables to the block cache: without room for
	// them on top, a cache the size of two memtables caches nothing.
	cache := opts.CacheSize + memTables*opts.MemTableSize
	d, err := pebbleds.NewDatastore(dir,
		pebbleds.WithCacheSize(cache),
		pebbleds.WithPebbleOpts(po),
		pebbleds.WithPebbleWriteOptions(wo))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	return start(d, pebbleScan(d.DB)), nil
}

// OpenMemory returns a Store kept in memory, for tests.
func OpenMemory() *Store {
	d := dssync.MutexWrap(ds.NewMapDatastore())
	return start(d, queryScan(d))
}

func start(d ds.Batching, scan openCursor) *Store {
	s := &Store{
		d: d, scan: scan, ov: newOverlay(),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.run()
	return s
}

// Get returns the value of key, or an error wrapping crdt.ErrNotFound. It
// sees the writes of batches still in flight.
func (s *Store) Get(key string) ([]byte, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, fmt.Errorf("get %s: %w", key, ErrClosed)
	}
	w, ok := s.ov.get(key)
	if !ok {
		s.readers.Add(1)
	}
	s.mu.RUnlock()

	switch {
	case ok && w.del:
		return nil, fmt.Errorf("get %s: %w", key, crdt.ErrNotFound)
	case ok:
		return w.val, nil
	}
	defer s.readers.Done()
	val, err := s.d.Get(context.Background(), dsKey(key))
	switch {
	case errors.Is(err, ds.ErrNotFound):
		return nil, fmt.Errorf("get %s: %w", key, crdt.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return val, nil
}

// Scan calls fn for each key that starts with prefix and is not less than
// start, in ascending order, until fn returns false. It sees the writes of
// batches still in flight. The value is only valid during the call.
func (s *Store) Scan(prefix, start string, fn func(key string, value []byte) bool) error {
	from := max(prefix, start)

	// Copy the overlay and open the cursor under one lock: a batch then
	// leaves the overlay either before both or after both, never between.
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("scan %s: %w", prefix, ErrClosed)
	}
	mine := s.ov.scan(prefix, from)
	c, err := s.scan(prefix, from)
	if err == nil {
		s.readers.Add(1)
	}
	s.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("scan %s: %w", prefix, err)
	}
	defer s.readers.Done()

	merge(mine, c, fn)
	if err := c.close(); err != nil {
		return fmt.Errorf("scan %s: %w", prefix, err)
	}
	return nil
}

// merge calls fn for the union of the overlay's writes and the cursor's
// keys, in key order: an overlay write hides the cursor's key, and a
// delete hides it altogether.
func merge(mine []write, c cursor, fn func(string, []byte) bool) {
	more := c.next()
	for more || len(mine) > 0 {
		if len(mine) == 0 || more && c.key() < mine[0].key {
			if !fn(c.key(), c.value()) {
				return
			}
			more = c.next()
			continue
		}
		w := mine[0]
		mine = mine[1:]
		if more && c.key() == w.key {
			more = c.next()
		}
		if !w.del && !fn(w.key, w.val) {
			return
		}
	}
}

// Realms lists the ids of the realms this store holds.
func (s *Store) Realms() ([]crdt.RealmID, error) {
	const prefix = "realms/"
	var ids []crdt.RealmID
	var perr error
	err := s.Scan(prefix, "", func(key string, _ []byte) bool {
		var id crdt.RealmID
		id, perr = crdt.ParseHash(strings.TrimPrefix(key, prefix))
		ids = append(ids, id)
		return perr == nil
	})
	if err = errors.Join(err, perr); err != nil {
		return nil, fmt.Errorf("list realms: %w", err)
	}
	return ids, nil
}

// Close commits the batches already queued, stops the committer and
// closes the datastore. Later calls return ErrClosed; closing twice is
// not an error.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	close(s.stop)
	<-s.done
	s.readers.Wait()
	if err := s.d.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}
