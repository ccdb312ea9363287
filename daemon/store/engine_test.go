package store

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/realmsync/realmsync/crdt"
)

// t0 is the wall clock of the tests, in Unix milliseconds.
const t0 = 1_780_000_000_000

// author is one node writing to one realm kept in a Store, the way the
// daemon will: the realm under a lock, each batch queued under it and
// waited for outside it.
type author struct {
	s    *Store
	priv ed25519.PrivateKey
	pub  crdt.PublicKey

	mu   sync.Mutex
	r    *crdt.Realm
	wall int64
}

// keyFor returns a fixed key for seed, so reruns and child processes
// write as the same author.
func keyFor(seed byte) ed25519.PrivateKey {
	var s [ed25519.SeedSize]byte
	s[0] = seed
	return ed25519.NewKeyFromSeed(s[:])
}

// newAuthor creates a realm in s, or opens the one s holds.
func newAuthor(tb testing.TB, s *Store, priv ed25519.PrivateKey) *author {
	tb.Helper()
	a, err := openAuthor(s, priv)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

func openAuthor(s *Store, priv ed25519.PrivateKey) (*author, error) {
	ids, err := s.Realms()
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return createRealm(s, priv, 7)
	}
	a := &author{s: s, priv: priv, wall: t0}
	copy(a.pub[:], priv.Public().(ed25519.PublicKey))
	a.r, err = crdt.Open(s, ids[0])
	return a, err
}

// createRealm creates a new realm in s; each nonce makes another one.
func createRealm(s *Store, priv ed25519.PrivateKey, nonce byte) (*author, error) {
	a := &author{s: s, priv: priv, wall: t0}
	copy(a.pub[:], priv.Public().(ed25519.PublicKey))
	b := crdt.NewBatch()
	var err error
	a.r, _, err = crdt.Create(s, b, priv, "store test", "a", [16]byte{nonce}, t0)
	if err != nil {
		return nil, err
	}
	return a, s.Commit(context.Background(), b)
}

// write makes body the author's next op and returns once it is on disk,
// with the op's seq.
func (a *author) write(body crdt.Body) (uint64, error) {
	return a.writeWith(func(uint64) crdt.Body { return body })
}

// send writes a chat message whose id is the seq of its op.
func (a *author) send() (uint64, error) {
	return a.writeWith(func(seq uint64) crdt.Body { return message(seq) })
}

// writeWith writes the body that mk makes for the next seq.
func (a *author) writeWith(mk func(seq uint64) crdt.Body) (uint64, error) {
	a.mu.Lock()
	b := crdt.NewBatch()
	a.wall++
	head, _ := a.r.Head(a.pub)
	op, _, err := a.r.Write(b, a.priv, mk(head+1), a.wall)
	if err != nil {
		a.mu.Unlock()
		return 0, err
	}
	p, err := a.s.Queue(b)
	a.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return op.Seq, p.Wait(context.Background())
}

func message(i uint64) *crdt.Set {
	return &crdt.Set{Collection: crdt.MessagesCollection, ID: fmt.Sprintf("m%09d", i),
		Fields: []crdt.Field{{Name: "text", Value: []byte(`"a chat message of ordinary length"`)}}}
}

// replay builds a replica that never touched s: it receives a's chain as
// catch-up would deliver it, in ranges, into memory.
func replay(t *testing.T, a *author) *crdt.Realm {
	t.Helper()
	st := crdt.NewMemStorage()
	r, err := crdt.Open(st, a.r.ID())
	if err != nil {
		t.Fatal(err)
	}
	head, _ := a.r.Head(a.pub)
	var ops []*crdt.Op
	for seq := uint64(1); seq <= head; seq++ {
		op, err := a.r.Op(a.pub, seq)
		if err != nil {
			t.Fatalf("op %d of %d: %v", seq, head, err)
		}
		ops = append(ops, op)
	}
	b := crdt.NewBatch()
	// The genesis op has no realm id to link a range to; it goes alone,
	// the rest in ranges of at most crdt.MaxRangeOps.
	for i := 0; i < len(ops); {
		n := min(len(ops)-i, crdt.MaxRangeOps)
		if i == 0 {
			n = 1
		}
		if _, err := r.ApplyRange(b, ops[i:i+n], a.wall); err != nil {
			t.Fatal(err)
		}
		i += n
	}
	st.Commit(b)
	return r
}

// TestRealmOnPebble writes a realm's ops through the Store, reopens it,
// and checks that it shows what a replica in memory shows.
func TestRealmOnPebble(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	a := newAuthor(t, s, keyFor(1))

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 25 {
				if _, err := a.send(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	bodies := []crdt.Body{
		&crdt.Counter{Collection: "stats", ID: "s", Field: "n", Delta: 5},
		&crdt.SetAdd{Collection: "stats", ID: "s", Field: "tags", Elem: []byte("x")},
		&crdt.Delete{Collection: crdt.MessagesCollection, ID: "m000000003"},
	}
	for _, body := range bodies {
		if _, err := a.write(body); err != nil {
			t.Fatal(err)
		}
	}
	want := a.r.Digest()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dir, Options{})
	a = newAuthor(t, s, keyFor(1))
	if got := a.r.Digest(); got != want {
		t.Fatalf("digest after reopen = %s; want %s", got, want)
	}
	mem := replay(t, a)
	if got := mem.Digest(); got != want {
		t.Fatalf("digest of a replica in memory = %s; want %s", got, want)
	}
	got, err := a.r.Messages("", 1000)
	if err != nil {
		t.Fatal(err)
	}
	wantMsgs, err := mem.Messages("", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 199 || !slices.EqualFunc(got, wantMsgs, sameMessage) {
		t.Fatalf("messages after reopen: %d, want 199 in the in-memory replica's order", len(got))
	}
}

func sameMessage(x, y *crdt.Object) bool { return x.Key == y.Key && x.Created == y.Created }

// counting is a Storage that counts the keys read through it.
type counting struct {
	crdt.Storage
	reads int
}

func (c *counting) Get(key string) ([]byte, error) {
	c.reads++
	return c.Storage.Get(key)
}

func (c *counting) Scan(prefix, start string, fn func(string, []byte) bool) error {
	return c.Storage.Scan(prefix, start, func(k string, v []byte) bool {
		c.reads++
		return fn(k, v)
	})
}

// TestOpenDoesNotReplay checks that opening a realm reads as many keys
// after 10 messages as after 1,000: startup does not grow with history.
func TestOpenDoesNotReplay(t *testing.T) {
	reads := func(n int) int {
		s := OpenMemory()
		defer s.Close()
		a := newAuthor(t, s, keyFor(2))
		for range n {
			if _, err := a.send(); err != nil {
				t.Fatal(err)
			}
		}
		c := &counting{Storage: s}
		r, err := crdt.Open(c, a.r.ID())
		if err != nil {
			t.Fatal(err)
		}
		if r.Digest() != a.r.Digest() {
			t.Fatal("reopened realm has another digest")
		}
		return c.reads
	}
	small, large := reads(10), reads(1000)
	if small != large {
		t.Errorf("Open read %d keys after 10 messages and %d after 1000; want equal", small, large)
	}
}
