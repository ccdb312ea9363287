package store

import (
	"context"
	"fmt"

	"github.com/realmsync/realmsync/crdt"
)

// Pending is a batch queued for commit; Wait says when it is on disk.
type Pending struct {
	writes []write
	gen    uint64
	err    error         // set before done is closed
	done   chan struct{} // closed once the batch is on disk or has failed
}

// Commit queues b and returns once it is durably on disk (unless the
// Store was opened with NoSync). From the moment Commit is called, Get and
// Scan see b's writes. Concurrent calls share one datastore write and one
// fsync. Committing an empty batch waits for every batch queued before it.
//
// If ctx ends first, Commit returns its error, but b stays queued and may
// still reach disk. Once a commit has failed, every later Commit fails
// too. After Close, Commit returns ErrClosed.
func (s *Store) Commit(ctx context.Context, b *crdt.Batch) error {
	p, err := s.Queue(b)
	if err != nil {
		return err
	}
	return p.Wait(ctx)
}

// Queue is the first half of Commit: it queues b and returns at once.
// Batches reach disk in the order they were queued, so a caller that
// builds batches under a lock (one Realm's, say) queues them under that
// lock and waits for them outside it: its writers then share syncs while
// a later batch never lands before an earlier one. b may be reused once
// Queue returns.
func (s *Store) Queue(b *crdt.Batch) (*Pending, error) {
	return s.submit(flatten(b))
}

// Wait returns once the batch is durably on disk, or the error that kept
// it off. If ctx ends first, Wait returns its error and the batch stays
// queued.
func (p *Pending) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("commit: %w", context.Cause(ctx))
	}
}

// commit is Commit for writes sorted by key.
func (s *Store) commit(ctx context.Context, ws []write) error {
	p, err := s.submit(ws)
	if err != nil {
		return err
	}
	return p.Wait(ctx)
}

// submit queues writes sorted by key and wakes the committer.
func (s *Store) submit(ws []write) (*Pending, error) {
	p := &Pending{writes: ws, done: make(chan struct{})}
	if err := s.enqueue(p); err != nil {
		return nil, err
	}
	select {
	case s.wake <- struct{}{}:
	default: // the committer is already due to look at the queue
	}
	return p, nil
}

// enqueue puts p into the overlay and the queue, in one step so that the
// queue's order is the order of the overlay's batch numbers.
func (s *Store) enqueue(p *Pending) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("commit: %w", ErrClosed)
	case s.failed != nil:
		return fmt.Errorf("commit: earlier failure: %w", s.failed)
	}
	s.gen++
	p.gen = s.gen
	s.ov.add(p.writes, p.gen)
	s.queue = append(s.queue, p)
	return nil
}

// run is the committer: it commits whatever is queued each time it is
// woken, and what is left when the Store closes.
func (s *Store) run() {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
			s.commitQueued()
		case <-s.stop:
			// Close has refused new batches; nothing can join the queue.
			s.commitQueued()
			return
		}
	}
}

// commitQueued writes every queued batch as one synced datastore batch,
// then acknowledges each of them.
func (s *Store) commitQueued() {
	s.mu.Lock()
	group := s.queue
	s.queue = nil
	s.mu.Unlock()
	if len(group) == 0 {
		return
	}

	err := s.write(group)

	s.mu.Lock()
	if err != nil {
		// What is on disk is now uncertain: refuse everything queued
		// behind, and read only the datastore from now on.
		s.failed = err
		err = fmt.Errorf("commit: %w", err)
		group = append(group, s.queue...)
		s.queue = nil
		s.ov.reset()
	} else {
		dropped := false
		for _, p := range group {
			dropped = s.ov.drop(p.writes, p.gen) || dropped
		}
		if dropped {
			s.ov.compact()
		}
	}
	s.mu.Unlock()

	for _, p := range group {
		p.err = err
		close(p.done)
	}
}

// write puts the group's writes into one datastore batch, in queue order
// so that the newest write of a key wins, and commits it.
func (s *Store) write(group []*Pending) error {
	n := 0
	for _, p := range group {
		n += len(p.writes)
	}
	if n == 0 {
		return nil
	}
	ctx := context.Background()
	b, err := s.d.Batch(ctx)
	if err != nil {
		return fmt.Errorf("new batch: %w", err)
	}
	for _, p := range group {
		for _, w := range p.writes {
			if w.del {
				err = b.Delete(ctx, dsKey(w.key))
			} else {
				err = b.Put(ctx, dsKey(w.key), w.val)
			}
			if err != nil {
				return fmt.Errorf("stage %s: %w", w.key, err)
			}
		}
	}
	if err := b.Commit(ctx); err != nil {
		return fmt.Errorf("write %d keys: %w", n, err)
	}
	return nil
}
