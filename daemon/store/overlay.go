package store

import (
	"slices"
	"strings"

	"github.com/realmsync/realmsync/crdt"
)

// write is one key a batch writes; del marks a delete.
type write struct {
	key string
	val []byte
	del bool
}

// flatten lists a batch's writes in key order.
func flatten(b *crdt.Batch) []write {
	ws := make([]write, 0, b.Len())
	b.Each(func(key string, val []byte) {
		ws = append(ws, write{key: key, val: val, del: val == nil})
	})
	return ws
}

// entry is what the overlay holds for one key: the write of the newest
// batch in flight that wrote it, and that batch's number.
type entry struct {
	write
	gen uint64
}

// overlay holds the writes of the batches in flight. It is not safe for
// concurrent use; Store guards it.
type overlay struct {
	m    map[string]entry
	keys []string // the keys of m, sorted
}

func newOverlay() *overlay { return &overlay{m: make(map[string]entry)} }

// add records the writes (sorted by key) of batch number gen, which is
// newer than every batch already here.
func (o *overlay) add(ws []write, gen uint64) {
	var fresh []string
	for _, w := range ws {
		if _, ok := o.m[w.key]; !ok {
			fresh = append(fresh, w.key)
		}
		o.m[w.key] = entry{write: w, gen: gen}
	}
	if len(fresh) > 0 {
		o.keys = mergeSorted(o.keys, fresh)
	}
}

// drop forgets the writes of batch number gen, now on disk, except where
// a newer batch in flight wrote the same key.
func (o *overlay) drop(ws []write, gen uint64) (dropped bool) {
	for _, w := range ws {
		if e, ok := o.m[w.key]; ok && e.gen == gen {
			delete(o.m, w.key)
			dropped = true
		}
	}
	return dropped
}

// compact removes from keys what drop deleted from m.
func (o *overlay) compact() {
	o.keys = slices.DeleteFunc(o.keys, func(k string) bool {
		_, ok := o.m[k]
		return !ok
	})
}

// reset forgets everything.
func (o *overlay) reset() {
	clear(o.m)
	o.keys = nil
}

// get returns the write held for key, if any.
func (o *overlay) get(key string) (write, bool) {
	e, ok := o.m[key]
	return e.write, ok
}

// scan copies out, in key order, the writes to keys that start with prefix
// and are not less than from.
func (o *overlay) scan(prefix, from string) []write {
	i, _ := slices.BinarySearch(o.keys, from)
	var out []write
	for _, k := range o.keys[i:] {
		if !strings.HasPrefix(k, prefix) {
			break
		}
		out = append(out, o.m[k].write)
	}
	return out
}

// mergeSorted merges two sorted slices of distinct keys into a new one.
func mergeSorted(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0] < b[0] {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}
