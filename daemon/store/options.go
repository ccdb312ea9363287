package store

import (
	"errors"
	"fmt"
)

// Defaults for the zero fields of Options.
const (
	DefaultCacheSize    = 32 << 20 // bytes
	DefaultMemTableSize = 64 << 20 // bytes
)

// memTables is how many memtables pebble keeps before it stalls writes.
const memTables = 2

// Limits on Options.MemTableSize.
const (
	minMemTableSize = 1 << 20 // bytes
	maxMemTableSize = 1 << 30 // bytes
)

// Options configures a pebble-backed Store. The zero value is ready to use.
type Options struct {
	// CacheSize is the size of pebble's block cache, in bytes, on top of
	// the memtables. Zero means DefaultCacheSize (32 MiB).
	CacheSize int64

	// MemTableSize is the size of one pebble memtable, in bytes, between
	// 1 MiB and 1 GiB. Pebble keeps up to two in memory before it stalls
	// writes; what is not written yet takes no memory. Zero means
	// DefaultMemTableSize (64 MiB): a catch-up of 100,000 messages fits
	// in one, so it is not flushed and compacted while it runs, which cost
	// a third of the catch-up's CPU with 16 MiB.
	MemTableSize int64

	// NoSync commits batches without fsync. For tests only: a power loss
	// or kernel crash loses writes that Commit has acknowledged (a crash
	// of the process alone does not). Default false.
	NoSync bool
}

// validate returns one error per broken rule, joined.
func (o Options) validate() error {
	var errs []error
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("cache size %d: must not be negative", o.CacheSize))
	}
	if o.MemTableSize != 0 && (o.MemTableSize < minMemTableSize || o.MemTableSize > maxMemTableSize) {
		errs = append(errs, fmt.Errorf("memtable size %d: must be between %d and %d bytes",
			o.MemTableSize, minMemTableSize, maxMemTableSize))
	}
	return errors.Join(errs...)
}

// withDefaults returns o with its zero fields set to the defaults.
func (o Options) withDefaults() Options {
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	return o
}
