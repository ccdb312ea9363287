package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	ds "github.com/ipfs/go-datastore"

	"github.com/realmsync/realmsync/crdt"
)

// TestEmptyCommitWaits checks that committing an empty batch returns only
// after the batches queued before it are synced.
func TestEmptyCommitWaits(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			s, _ := be.open(t)
			g := hold(s)
			first := submit(t, s, []string{"a=1"})
			<-g.entered
			empty := submit(t, s, nil)
			g.proceed <- struct{}{}
			await(t, first)
			select {
			case <-empty.done:
				t.Fatal("empty commit returned before a sync that followed it")
			default:
			}
			<-g.entered
			g.proceed <- struct{}{}
			await(t, empty)
		})
	}
}

// TestCommitContextEnds checks that Commit gives up waiting when its
// context ends, while the batch stays visible and is still synced.
func TestCommitContextEnds(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			s, reopen := be.open(t)
			g := hold(s)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err := s.Commit(ctx, batch("a=1"))
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("commit with a canceled context: got %v, want context.Canceled", err)
			}
			if got, err := s.Get("a"); err != nil || string(got) != "1" {
				t.Fatalf("Get(a) after canceled commit = %q, %v; want 1", got, err)
			}
			<-g.entered
			g.proceed <- struct{}{}
			if s = reopen(); s != nil {
				if got, err := s.Get("a"); err != nil || string(got) != "1" {
					t.Fatalf("Get(a) after reopen = %q, %v; want 1", got, err)
				}
			}
		})
	}
}

var errDisk = errors.New("disk on fire")

// failing makes every datastore batch commit fail.
type failing struct{ ds.Batching }

func (f failing) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := f.Batching.Batch(ctx)
	return failingBatch{b}, err
}

type failingBatch struct{ ds.Batch }

func (failingBatch) Commit(context.Context) error { return errDisk }

// TestCommitFailure checks that a failed write or sync fails its batch and
// every later one, while what was committed before stays readable.
func TestCommitFailure(t *testing.T) {
	breaks := []struct {
		name    string
		breakIt func(s *Store)
	}{
		{"write", func(s *Store) { s.apply = dsApply(failing{s.d}) }},
		{"sync", func(s *Store) { s.sync = func() error { return errDisk } }},
	}
	for _, be := range backends {
		for _, br := range breaks {
			t.Run(be.name+"/"+br.name, func(t *testing.T) {
				s, _ := be.open(t)
				ctx := context.Background()
				if err := s.Commit(ctx, batch("a=1")); err != nil {
					t.Fatal(err)
				}
				br.breakIt(s)
				if err := s.Commit(ctx, batch("a=2", "b=2")); !errors.Is(err, errDisk) {
					t.Fatalf("failing commit: got %v, want %v", err, errDisk)
				}
				if got, err := s.Get("a"); err != nil || len(got) != 1 {
					t.Errorf("Get(a) after failure = %q, %v; want a value", got, err)
				}
				if err := s.Commit(ctx, batch("c=3")); !errors.Is(err, errDisk) {
					t.Errorf("commit after failure: got %v, want %v", err, errDisk)
				}
				if _, err := s.Get("c"); !errors.Is(err, crdt.ErrNotFound) {
					t.Errorf("Get(c), refused after the failure: got %v, want ErrNotFound", err)
				}
			})
		}
	}
}

// TestClosed checks what a closed Store answers.
func TestClosed(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			s, _ := be.open(t)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(context.Background(), crdt.NewBatch()); !errors.Is(err, ErrClosed) {
				t.Errorf("Commit: got %v, want ErrClosed", err)
			}
			if _, err := s.Get("a"); !errors.Is(err, ErrClosed) {
				t.Errorf("Get: got %v, want ErrClosed", err)
			}
			if err := s.Scan("", "", nil); !errors.Is(err, ErrClosed) {
				t.Errorf("Scan: got %v, want ErrClosed", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close: got %v, want nil", err)
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string // a part of the error; empty for none
	}{
		{"zero", Options{}, ""},
		{"set", Options{CacheSize: 1 << 20, MemTableSize: 4 << 20, NoSync: true}, ""},
		{"negative cache", Options{CacheSize: -1}, "cache size -1"},
		{"tiny memtable", Options{MemTableSize: 1000}, "memtable size 1000"},
		{"huge memtable", Options{MemTableSize: 2 << 30}, "memtable size"},
		{"two faults", Options{CacheSize: -1, MemTableSize: 1}, "memtable size 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := Open(t.TempDir(), Options{CacheSize: -1}); err == nil {
		t.Error("Open with bad options: got nil error")
	}
}
