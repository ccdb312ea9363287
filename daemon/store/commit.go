package store

import (
	"context"
	"fmt"

	"github.com/realmsync/realmsync/crdt"
)

// Pending is a batch written to the store; Wait says when it is durable.
type Pending struct {
	err  error         // set before done is closed
	done chan struct{} // closed once the batch is synced or has failed
}

// Commit writes b and returns once it is durably on disk (unless the
// Store was opened with NoSync). Concurrent calls share one fsync. Once a
// write or sync has failed, every later Commit fails too. After Close,
// Commit returns ErrClosed.
//
// If ctx ends first, Commit returns its error; b is written all the same
// and may still become durable.
func (s *Store) Commit(ctx context.Context, b *crdt.Batch) error {
	p, err := s.Queue(b)
	if err != nil {
		return err
	}
	return p.Wait(ctx)
}

// Queue is the first half of Commit: it writes b, which Get and Scan see
// from then on, and returns without waiting for the sync. Batches are
// written in the order Queue is called, so a caller that builds batches
// under a lock (one Realm's, say) queues them under that lock and waits
// outside it: its writers then share syncs while no batch can overtake an
// earlier one. b may be reused once Queue returns.
func (s *Store) Queue(b *crdt.Batch) (*Pending, error) {
	p, err := s.writeQueued(b)
	if err != nil {
		return nil, err
	}
	// Waking the syncer can cost a thread wake-up: do it after the write
	// lock is let go, off the path that callers serialise on.
	select {
	case s.wake <- struct{}{}:
	default: // the syncer is already due to look
	}
	return p, nil
}

// writeQueued writes b and puts it in line for the next sync.
func (s *Store) writeQueued(b *crdt.Batch) (*Pending, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.usable(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if err := s.write(b); err != nil {
		err = fmt.Errorf("commit: %w", err)
		s.fail(err)
		return nil, err
	}
	p := &Pending{done: make(chan struct{})}
	s.mu.Lock()
	s.unsynced = append(s.unsynced, p)
	s.mu.Unlock()
	return p, nil
}

// Wait returns once the batch is durable, or the error that kept it from
// becoming so. If ctx ends first, Wait returns its error instead.
func (p *Pending) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("commit: %w", context.Cause(ctx))
	}
}

// usable returns ErrClosed after Close, and the earlier failure after one.
func (s *Store) usable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.failed != nil:
		return fmt.Errorf("earlier failure: %w", s.failed)
	}
	return nil
}

// fail records the first failure; every later commit returns it.
func (s *Store) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.failed = err
	}
}

// write puts a batch's writes into one datastore batch and commits it,
// unsynced. The caller holds s.wmu.
func (s *Store) write(b *crdt.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	ctx := context.Background()
	db, err := s.d.Batch(ctx)
	if err != nil {
		return fmt.Errorf("new batch: %w", err)
	}
	b.Each(func(key string, val []byte) {
		switch {
		case err != nil:
		case val == nil:
			err = db.Delete(ctx, dsKey(key))
		default:
			err = db.Put(ctx, dsKey(key), val)
		}
	})
	if err != nil {
		return fmt.Errorf("stage batch: %w", err)
	}
	if err := db.Commit(ctx); err != nil {
		return fmt.Errorf("write %d keys: %w", b.Len(), err)
	}
	return nil
}

// run is the syncer: each time it is woken it makes everything written so
// far durable with one sync, then tells the waiters. It syncs what is left
// when the Store closes.
func (s *Store) run() {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
			s.syncWritten()
		case <-s.stop:
			// Close has refused new batches; nothing can join.
			s.syncWritten()
			return
		}
	}
}

// syncWritten syncs the batches written so far and acknowledges them.
// Batches written while the sync runs wait for the next one.
func (s *Store) syncWritten() {
	s.mu.Lock()
	group := s.unsynced
	s.unsynced = nil
	s.mu.Unlock()
	if len(group) == 0 {
		return
	}

	err := s.sync()
	if err != nil {
		// What is on disk is now uncertain: refuse everything from now on.
		err = fmt.Errorf("sync: %w", err)
		s.fail(err)
	}
	for _, p := range group {
		p.err = err
		close(p.done)
	}
}
