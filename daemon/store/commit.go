package store

import (
	"context"
	"fmt"
	"time"

	"github.com/realmsync/realmsync/crdt"
)

// Pending is a batch written to the store; Wait says when it is durable.
type Pending struct {
	s    *Store
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
	p := &Pending{s: s, done: make(chan struct{})}
	s.mu.Lock()
	s.unsynced = append(s.unsynced, p)
	s.mu.Unlock()
	return p, nil
}

// Wait returns once the batch is durable, or the error that kept it from
// becoming so. If ctx ends first, Wait returns its error instead.
//
// A waiter does the sync itself when none is running: it makes every
// batch written so far durable, its own and others', and tells their
// waiters. A sync that is running when the batch was written may not
// hold it, so a waiter that finds one running waits for it to end and
// looks again. Doing the sync in the waiter's goroutine spares the
// hand-overs to and from a syncer goroutine on the path of every
// acknowledgement.
func (p *Pending) Wait(ctx context.Context) error {
	s := p.s
	for {
		select {
		case <-p.done:
			return p.err
		default:
		}
		if ctx.Err() != nil {
			return fmt.Errorf("commit: %w", context.Cause(ctx))
		}
		s.mu.Lock()
		ended, busy := s.syncEnd, s.syncing
		s.mu.Unlock()
		if !busy && s.syncRound() {
			continue
		}
		select {
		case <-p.done:
			return p.err
		case <-ended:
		case <-ctx.Done():
			return fmt.Errorf("commit: %w", context.Cause(ctx))
		}
	}
}

// Done reports whether the batch is durable, without waiting. It stays
// false for a batch that failed.
func (p *Pending) Done() bool {
	select {
	case <-p.done:
		return p.err == nil
	default:
		return false
	}
}

// Syncing returns a channel that is closed when the sync running now
// ends, or nil when none runs. A batch written during a sync waits for
// the next one, so a writer that finds one running loses nothing by
// gathering more writes into its batch until it ends.
func (s *Store) Syncing() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.syncing {
		return nil
	}
	return s.syncEnd
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
	return s.apply(b)
}

// syncGrace is how long the syncer leaves written batches to a waiter
// before it syncs them itself: a batch that somebody waits for is synced
// by that waiter, and the syncer only has to make sure that batches that
// nobody waits for (a peer's ops, say) become durable soon. Under gossip
// such batches come every few milliseconds, one op each: a short grace
// cost each its own sync (a tenth of a node's CPU with 20 nodes on two
// cores). What a crash loses of them, catch-up fetches again.
const syncGrace = 50 * time.Millisecond

// run is the syncer: woken by a written batch, it gives waiters
// syncGrace to sync it, then syncs whatever is left. It syncs what is
// left when the Store closes.
func (s *Store) run() {
	defer close(s.done)
	grace := time.NewTimer(0)
	<-grace.C
	for {
		select {
		case <-s.wake:
			grace.Reset(syncGrace)
			select {
			case <-grace.C:
				s.syncRound()
			case <-s.stop:
				s.syncAll()
				return
			}
		case <-s.stop:
			// Close has refused new batches; nothing can join.
			s.syncAll()
			return
		}
	}
}

// syncAll syncs until no batch is left unsynced, waiting for a round that
// a waiter runs.
func (s *Store) syncAll() {
	for {
		s.mu.Lock()
		ended, busy, left := s.syncEnd, s.syncing, len(s.unsynced)
		s.mu.Unlock()
		switch {
		case busy:
			<-ended
		case left == 0:
			return
		default:
			s.syncRound()
		}
	}
}

// syncRound syncs the batches written so far and acknowledges them,
// unless a round runs already or nothing waits; it reports whether it
// ran. Batches written while it runs wait for the next round.
func (s *Store) syncRound() bool {
	s.mu.Lock()
	if s.syncing || len(s.unsynced) == 0 {
		s.mu.Unlock()
		return false
	}
	s.syncing = true
	group := s.unsynced
	s.unsynced = nil
	s.mu.Unlock()

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

	s.mu.Lock()
	s.syncing = false
	close(s.syncEnd)
	s.syncEnd = make(chan struct{})
	s.mu.Unlock()
	return true
}
