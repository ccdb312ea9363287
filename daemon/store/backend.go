package store

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/realmsync/realmsync/crdt"
)

// cursor walks the datastore's keys in order. Keys come without the
// datastore's leading "/". The value is valid until the next call to next.
type cursor interface {
	next() bool
	key() string
	value() []byte
	close() error
}

// openCursor returns a cursor over the keys that start with prefix and are
// not less than from. It reads a consistent snapshot taken when it is
// called.
type openCursor func(prefix, from string) (cursor, error)

// dsKey maps an engine key to its datastore key.
func dsKey(key string) ds.Key { return ds.RawKey("/" + key) }

// pebbleCursor reads pebble directly: go-ds-pebble's Query cannot seek,
// so a scan from deep inside a prefix would walk the whole prefix.
type pebbleCursor struct {
	it      *pebble.Iterator
	started bool
	k       string
	val     []byte
	err     error
}

func pebbleScan(db *pebble.DB) openCursor {
	return func(prefix, from string) (cursor, error) {
		it, err := db.NewIter(&pebble.IterOptions{
			LowerBound: []byte("/" + from),
			UpperBound: successor([]byte("/" + prefix)),
		})
		if err != nil {
			return nil, fmt.Errorf("pebble iterator: %w", err)
		}
		return &pebbleCursor{it: it}, nil
	}
}

func (c *pebbleCursor) next() bool {
	ok := false
	if c.started {
		ok = c.it.Next()
	} else {
		c.started, ok = true, c.it.First()
	}
	if !ok {
		return false
	}
	v, err := c.it.ValueAndErr()
	if err != nil {
		c.err = err
		return false
	}
	c.k, c.val = string(c.it.Key()[1:]), v
	return true
}

func (c *pebbleCursor) key() string   { return c.k }
func (c *pebbleCursor) value() []byte { return c.val }

func (c *pebbleCursor) close() error {
	err := c.it.Close()
	if c.err != nil {
		return c.err
	}
	return err
}

// successor returns the smallest key greater than every key with prefix
// p, or nil when there is none.
func successor(p []byte) []byte {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0xff {
			s := bytes.Clone(p[:i+1])
			s[i]++
			return s
		}
	}
	return nil
}

// sliceCursor walks entries that a query has already collected.
type sliceCursor struct {
	es []query.Entry
	i  int
}

// queryScan scans any datastore with a query, a filter and a sort: fine
// for the map backend of tests, slow for a large store.
func queryScan(d ds.Datastore) openCursor {
	return func(prefix, from string) (cursor, error) {
		q := query.Query{
			// The query's prefix matches whole path segments only.
			Prefix: path.Dir("/" + prefix + "x"),
			Filters: []query.Filter{
				query.FilterKeyPrefix{Prefix: "/" + prefix},
				query.FilterKeyCompare{Op: query.GreaterThanOrEqual, Key: "/" + from},
			},
			Orders: []query.Order{query.OrderByKey{}},
		}
		res, err := d.Query(context.Background(), q)
		if err != nil {
			return nil, fmt.Errorf("query: %w", err)
		}
		es, err := res.Rest()
		if err != nil {
			return nil, fmt.Errorf("query: %w", err)
		}
		return &sliceCursor{es: es, i: -1}, nil
	}
}

func (c *sliceCursor) next() bool {
	c.i++
	return c.i < len(c.es)
}

func (c *sliceCursor) key() string   { return strings.TrimPrefix(c.es[c.i].Key, "/") }
func (c *sliceCursor) value() []byte { return c.es[c.i].Value }
func (c *sliceCursor) close() error  { return nil }

// applyBatch writes a batch to the datastore, unsynced.
type applyBatch func(*crdt.Batch) error

// dsApply writes through the datastore's own batches.
func dsApply(d ds.Batching) applyBatch {
	return func(b *crdt.Batch) error {
		ctx := context.Background()
		db, err := d.Batch(ctx)
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
}

// pebbleApply writes to pebble directly, the keys as go-ds-pebble spells
// them, into a pebble batch sized for the whole batch at once: a catch-up
// writes thousands of keys per batch, and growing the buffer step by step
// copied them over and over.
func pebbleApply(db *pebble.DB) applyBatch {
	return func(b *crdt.Batch) error {
		pb := db.NewBatchWithSize(b.Size() + b.Len()*(1+batchRecordOverhead))
		defer pb.Close()
		key := make([]byte, 0, 256)
		var err error
		b.Each(func(k string, val []byte) {
			if err != nil {
				return
			}
			key = append(append(key[:0], '/'), k...)
			if val == nil {
				err = pb.Delete(key, nil)
			} else {
				err = pb.Set(key, val, nil)
			}
		})
		if err != nil {
			return fmt.Errorf("stage batch: %w", err)
		}
		if err := pb.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("write %d keys: %w", b.Len(), err)
		}
		return nil
	}
}

// batchRecordOverhead is what pebble adds to each key and value in a
// batch: a kind byte and two length varints of up to 5 bytes.
const batchRecordOverhead = 11
