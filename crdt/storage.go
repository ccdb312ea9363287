package crdt

import (
	"slices"
	"strings"
)

// Storage is the engine's read access to persisted state: an ordered
// key-value store with text keys. The engine never writes to it directly;
// every change comes back to the caller as a Batch.
//
// Get and Scan must reflect every Batch the engine has handed out before,
// whether the caller has committed it yet or not (a store with group commit
// keeps batches in flight readable).
type Storage interface {
	// Get returns the value of key, or ErrNotFound.
	Get(key string) ([]byte, error)
	// Scan calls fn for each key that starts with prefix and is not less
	// than start, in ascending order, until fn returns false. The value is
	// only valid during the call.
	Scan(prefix, start string, fn func(key string, value []byte) bool) error
}

// Batch collects the writes of one or more engine calls. The caller writes
// it to storage atomically; a Realm whose batch failed to commit must be
// reopened, since its memory already reflects the batch.
type Batch struct {
	writes map[string][]byte // nil value: delete
	size   int               // bytes of the keys and values put, rewrites too
}

// NewBatch returns an empty batch.
func NewBatch() *Batch { return &Batch{writes: make(map[string][]byte)} }

func (b *Batch) put(key string, value []byte) { b.writes[key] = value; b.size += len(key) + len(value) }
func (b *Batch) del(key string)               { b.writes[key] = nil; b.size += len(key) }

// Put adds a write of key to the batch, so that a caller's own records
// (outside the engine's prefixes "r/" and "realms/") land atomically with
// the engine's. A nil value is stored as an empty one.
func (b *Batch) Put(key string, value []byte) {
	if value == nil {
		value = []byte{}
	}
	b.put(key, value)
}

// Delete adds a delete of key to the batch.
func (b *Batch) Delete(key string) { b.del(key) }

// Reset empties the batch for another use, keeping its memory. Call it
// only once the batch is committed and nothing reads it any more.
func (b *Batch) Reset() { clear(b.writes); b.size = 0 }

// Len returns the number of keys the batch writes or deletes.
func (b *Batch) Len() int { return len(b.writes) }

// Size returns about how many bytes of keys and values the batch holds
// (a key written twice counts twice): enough to size a buffer for it.
func (b *Batch) Size() int { return b.size }

// Each calls fn for every write, in no particular order (each key is
// written once); a nil value means delete.
func (b *Batch) Each(fn func(key string, value []byte)) {
	for k, v := range b.writes {
		fn(k, v)
	}
}

// view reads through a batch to the storage under it.
type view struct {
	st Storage
	b  *Batch
}

func (v view) get(key string) ([]byte, error) {
	if val, ok := v.b.writes[key]; ok {
		if val == nil {
			return nil, ErrNotFound
		}
		return val, nil
	}
	return v.st.Get(key)
}

// scan merges the batch's writes under prefix with the storage's keys.
func (v view) scan(prefix string, fn func(key string, value []byte) bool) error {
	var mine []string
	for k := range v.b.writes {
		if strings.HasPrefix(k, prefix) {
			mine = append(mine, k)
		}
	}
	slices.Sort(mine)
	stop := false
	emitMine := func(upTo string) {
		for len(mine) > 0 && !stop && mine[0] < upTo {
			if val := v.b.writes[mine[0]]; val != nil {
				stop = !fn(mine[0], val)
			}
			mine = mine[1:]
		}
	}
	err := v.st.Scan(prefix, "", func(k string, val []byte) bool {
		emitMine(k)
		if stop {
			return false
		}
		if len(mine) > 0 && mine[0] == k {
			return true // the batch overrides this key; emitted below
		}
		stop = !fn(k, val)
		return !stop
	})
	if err != nil {
		return err
	}
	for len(mine) > 0 && !stop {
		if val := v.b.writes[mine[0]]; val != nil {
			stop = !fn(mine[0], val)
		}
		mine = mine[1:]
	}
	return nil
}

// MemStorage is an in-memory Storage for tests and simulations.
type MemStorage struct {
	m      map[string][]byte
	sorted []string // nil when stale
}

// NewMemStorage returns an empty MemStorage.
func NewMemStorage() *MemStorage { return &MemStorage{m: make(map[string][]byte)} }

// Get implements Storage.
func (s *MemStorage) Get(key string) ([]byte, error) {
	v, ok := s.m[key]
	if !ok {
		return nil, ErrNotFound
	}
	return v, nil
}

// Scan implements Storage.
func (s *MemStorage) Scan(prefix, start string, fn func(string, []byte) bool) error {
	if s.sorted == nil {
		s.sorted = make([]string, 0, len(s.m))
		for k := range s.m {
			s.sorted = append(s.sorted, k)
		}
		slices.Sort(s.sorted)
	}
	from := max(prefix, start)
	i, _ := slices.BinarySearch(s.sorted, from)
	for _, k := range s.sorted[i:] {
		if !strings.HasPrefix(k, prefix) || !fn(k, s.m[k]) {
			break
		}
	}
	return nil
}

// Commit applies a batch.
func (s *MemStorage) Commit(b *Batch) {
	for k, v := range b.writes {
		if v == nil {
			if _, ok := s.m[k]; ok {
				delete(s.m, k)
				s.sorted = nil
			}
			continue
		}
		if _, ok := s.m[k]; !ok {
			s.sorted = nil
		}
		s.m[k] = v
	}
}

// Len returns the number of keys held.
func (s *MemStorage) Len() int { return len(s.m) }
