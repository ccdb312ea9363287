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
	d     ds.Batching
	scan  openCursor
	apply applyBatch
	sync  func() error // makes every write so far durable

	wmu sync.Mutex // held while a batch is written: one at a time, in order

	mu       sync.Mutex
	unsynced []*Pending    // written, waiting for the next sync
	syncing  bool          // a sync round runs
	syncEnd  chan struct{} // closed when the running round ends
	closed   bool
	failed   error // set by a failed write or sync; later commits fail too

	readers sync.WaitGroup // Get and Scan calls reading d
	wake    chan struct{}  // buffered 1: there is something to sync
	stop    chan struct{}  // closed by Close
	done    chan struct{}  // closed when the syncer has ended
}

var _ crdt.Storage = (*Store)(nil)

// Open opens (or creates) a pebble store in dir and starts its syncer.
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	opts = opts.withDefaults()
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
	// Batches are written unsynced, as they come; the syncer then makes
	// all of them durable at once by syncing the write-ahead log, which
	// holds them in order. When pebble moves to a new log file it syncs
	// and closes the old one first, so a sync covers every earlier file.
	d, err := pebbleds.NewDatastore(dir,
		pebbleds.WithCacheSize(cache),
		pebbleds.WithPebbleOpts(po),
		pebbleds.WithPebbleWriteOptions(pebble.NoSync))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	sync := func() error { return d.DB.LogData(nil, pebble.Sync) }
	if opts.NoSync {
		sync = func() error { return nil }
	}
	return start(d, pebbleScan(d.DB), pebbleApply(d.DB), sync), nil
}

// OpenMemory returns a Store kept in memory, for tests.
func OpenMemory() *Store {
	d := dssync.MutexWrap(ds.NewMapDatastore())
	return start(d, queryScan(d), dsApply(d), func() error { return nil })
}

func start(d ds.Batching, scan openCursor, apply applyBatch, sync func() error) *Store {
	s := &Store{
		d: d, scan: scan, apply: apply, sync: sync,
		wake:    make(chan struct{}, 1),
		syncEnd: make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go s.run()
	return s
}

// enter registers a reader of d, unless the Store is closed.
func (s *Store) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.readers.Add(1)
	return true
}

// Get returns the value of key, or an error wrapping crdt.ErrNotFound. It
// sees every batch queued, synced or not.
func (s *Store) Get(key string) ([]byte, error) {
	if !s.enter() {
		return nil, fmt.Errorf("get %s: %w", key, ErrClosed)
	}
	defer s.readers.Done()
	val, err := s.d.Get(context.Background(), dsKey(key))
	switch {
	case errors.Is(err, ds.ErrNotFound):
		// A miss is common (every new object is looked up first) and
		// needs no detail: the bare sentinel costs nothing to make.
		return nil, crdt.ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return val, nil
}

// Scan calls fn for each key that starts with prefix and is not less than
// start, in ascending order, until fn returns false. It reads a snapshot
// taken when it is called, which holds every batch queued before. The
// value is only valid during the call.
func (s *Store) Scan(prefix, start string, fn func(key string, value []byte) bool) error {
	if !s.enter() {
		return fmt.Errorf("scan %s: %w", prefix, ErrClosed)
	}
	defer s.readers.Done()
	c, err := s.scan(prefix, max(prefix, start))
	if err != nil {
		return fmt.Errorf("scan %s: %w", prefix, err)
	}
	for c.next() && fn(c.key(), c.value()) {
	}
	if err := c.close(); err != nil {
		return fmt.Errorf("scan %s: %w", prefix, err)
	}
	return nil
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

// Close syncs the batches already queued, stops the syncer and closes
// the datastore. Later calls return ErrClosed; closing twice is
// not an error.
func (s *Store) Close() error {
	// Taking wmu first means no batch is half written: each one queued
	// is in s.unsynced for the syncer's last round.
	s.wmu.Lock()
	s.mu.Lock()
	was := s.closed
	s.closed = true
	s.mu.Unlock()
	s.wmu.Unlock()
	if was {
		return nil
	}

	close(s.stop)
	<-s.done
	s.readers.Wait()
	if err := s.d.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}
