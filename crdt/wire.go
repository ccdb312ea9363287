package crdt

import (
	"encoding/binary"
	"fmt"
)

// The canonical encoding is deliberately plain: fixed-width big-endian
// integers, byte strings prefixed with a uint32 length, lists prefixed with a
// uint32 count. There is exactly one encoding of every value, so the same op
// has the same bytes (and hash and signature) on every machine. Decoders
// never trust a length: each is checked against what is left of the input.

type writer struct{ b []byte }

func (w *writer) u8(v uint8)      { w.b = append(w.b, v) }
func (w *writer) u32(v uint32)    { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *writer) u64(v uint64)    { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *writer) fixed(p []byte)  { w.b = append(w.b, p...) }
func (w *writer) str(s string)    { w.u32(uint32(len(s))); w.b = append(w.b, s...) }
func (w *writer) bytes(p []byte)  { w.u32(uint32(len(p))); w.b = append(w.b, p...) }
func (w *writer) key(k PublicKey) { w.fixed(k[:]) }
func (w *writer) hash(h Hash)     { w.fixed(h[:]) }
func (w *writer) i64(v int64)     { w.u64(uint64(v)) }
func (w *writer) offer(o OfferID) { w.fixed(o[:]) }
func (w *writer) flag(v bool) {
	if v {
		w.u8(1)
	} else {
		w.u8(0)
	}
}
func (w *writer) stamp(s Stamp) { w.u64(uint64(s.Clock)); w.key(s.Author); w.u64(s.Seq) }

// reader decodes what writer wrote. The first error sticks: later reads
// return zero values, so a decoder checks r.err once at the end.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated %s", ErrMalformed, what)
	}
	r.b = nil
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.fail(what)
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u8() uint8 {
	p := r.take(1, "u8")
	if p == nil {
		return 0
	}
	return p[0]
}

func (r *reader) u32() uint32 {
	p := r.take(4, "u32")
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (r *reader) u64() uint64 {
	p := r.take(8, "u64")
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (r *reader) i64() int64 { return int64(r.u64()) }

// flag reads a boolean byte, which must be 0 or 1.
func (r *reader) flag() bool {
	v := r.u8()
	if v > 1 {
		r.fail("flag")
	}
	return v == 1
}

func (r *reader) bytes() []byte {
	n := r.u32()
	if uint64(n) > uint64(len(r.b)) {
		r.fail("byte string")
		return nil
	}
	return r.take(int(n), "byte string")
}

func (r *reader) str() string { return string(r.bytes()) }

func (r *reader) key() (k PublicKey) {
	copy(k[:], r.take(len(k), "key"))
	return k
}

func (r *reader) hash() (h Hash) {
	copy(h[:], r.take(len(h), "hash"))
	return h
}

func (r *reader) offer() (o OfferID) {
	copy(o[:], r.take(len(o), "offer id"))
	return o
}

func (r *reader) stamp() Stamp {
	return Stamp{Clock: Timestamp(r.u64()), Author: r.key(), Seq: r.u64()}
}

// count reads a list length and checks that at least min bytes per element
// are left, so a forged count cannot make a decoder allocate.
func (r *reader) count(min int) int {
	n := r.u32()
	if r.err == nil && uint64(n)*uint64(min) > uint64(len(r.b)) {
		r.fail("list")
		return 0
	}
	return int(n)
}

// done fails unless the whole input was consumed.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b))
	}
	return r.err
}
