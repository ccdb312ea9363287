package crdt

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// MessagesCollection is the collection that holds chat messages. Its
// objects are also listed in realm order by Realm.Messages.
const MessagesCollection = "messages"

// MessageID is the id of the message that op seq of author's chain
// creates when its writer leaves the id to the engine (a Set in
// MessagesCollection with an empty ID): "m", then 128 bits of a hash of
// the two in lower-case base32; 27 characters.
func MessageID(author PublicKey, seq uint64) string {
	h := sha256.New()
	h.Write([]byte("realmsync message id\x00"))
	h.Write(author[:])
	h.Write(binary.BigEndian.AppendUint64(nil, seq))
	return "m" + strings.ToLower(messageIDs.EncodeToString(h.Sum(nil)[:16]))
}

var messageIDs = base32.StdEncoding.WithPadding(base32.NoPadding)

// namedBy reports whether k is the message that the op at s creates: the
// one MessageID names after its position.
func (k ObjectKey) namedBy(s Stamp) bool {
	return k.engineNamed() && k.ID == MessageID(s.Author, s.Seq)
}

// engineNamed reports whether k has the shape of the ids MessageID gives.
func (k ObjectKey) engineNamed() bool {
	return k.Collection == MessagesCollection && len(k.ID) == messageIDLen && k.ID[0] == 'm'
}

// messageIDLen is the length of the ids MessageID gives.
const messageIDLen = 27

// ObjectKey names an object: a collection and an id within it.
type ObjectKey struct{ Collection, ID string }

// Object is the merged state of one object.
type Object struct {
	Key      ObjectKey
	Fields   []FieldState   // sorted by name
	Counters []CounterState // sorted by name
	Sets     []SetState     // sorted by name
	Deleted  bool           // the newest event was a delete
	Created  Stamp          // the op that made it visible last
	Updated  Stamp          // the newest op folded in
	Tomb     Stamp          // the newest delete; zero if none

	dig   Hash // digest of the state, when digOK
	digOK bool
}

// FieldState is a last-writer-wins register: the value of the newest write.
type FieldState struct {
	Name  string
	Value []byte
	At    Stamp
}

// CounterState is the sum of all additions to a counter field since the
// object's last delete.
type CounterState struct {
	Name  string
	Value int64
}

// SetState is an add-wins set field.
type SetState struct {
	Name  string
	Elems []SetElem // sorted by value
}

// SetElem is one element of a set field and the additions that keep it
// there. An element with no tags left is not in the set.
type SetElem struct {
	Value []byte
	Tags  []Hash // sorted
}

// Field returns the value of the named field and whether it is set.
func (o *Object) Field(name string) ([]byte, bool) {
	i, ok := slices.BinarySearchFunc(o.Fields, name, func(f FieldState, n string) int {
		return cmpStr(f.Name, n)
	})
	if !ok {
		return nil, false
	}
	return o.Fields[i].Value, true
}

// Counter returns the value of the named counter field.
func (o *Object) Counter(name string) int64 {
	for _, c := range o.Counters {
		if c.Name == name {
			return c.Value
		}
	}
	return 0
}

// Set returns the elements of the named set field, sorted.
func (o *Object) Set(name string) [][]byte {
	var out [][]byte
	for _, s := range o.Sets {
		if s.Name == name {
			for _, e := range s.Elems {
				out = append(out, e.Value)
			}
		}
	}
	return out
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fold applies one permitted data op to the object. Folding an object's
// ops in realm order defines its state; fold is also correct out of order
// where foldOutOfOrder says so.
func (o *Object) fold(op *Op) {
	o.digOK = false
	st := op.Stamp()
	if _, del := op.Body.(*Delete); del {
		*o = Object{Key: o.Key, Deleted: true, Tomb: st, Updated: st}
		return
	}
	// Created is the first write since the last delete, but a message's
	// own creating op (see MessageID) wins over writes of others stamped
	// before it: no one else can claim a message by touching it first.
	if o.Deleted || o.Created.IsZero() || o.Key.namedBy(st) ||
		st.Less(o.Created) && !o.Key.namedBy(o.Created) {
		o.Created = st
	}
	o.Deleted = false
	if o.Updated.Less(st) {
		o.Updated = st
	}
	switch b := op.Body.(type) {
	case *Set:
		for _, f := range b.Fields {
			o.setField(f, st)
		}
	case *Counter:
		c := o.counter(b.Field)
		c.Value += b.Delta
	case *SetAdd:
		e := o.elem(b.Field, b.Elem)
		h := op.Hash()
		if i, ok := slices.BinarySearchFunc(e.Tags, h, cmpHash); !ok {
			e.Tags = slices.Insert(e.Tags, i, h)
		}
	case *SetRemove:
		o.removeTags(b)
	}
}

// canFoldOutOfOrder reports whether op, which sorts before o.Updated, may
// be folded directly: field writes and counter additions commute with
// everything but deletes.
func (o *Object) canFoldOutOfOrder(op *Op) bool {
	switch op.Body.(type) {
	case *Set, *Counter:
		return o.Tomb.Less(op.Stamp()) && !o.Deleted
	}
	return false
}

func (o *Object) setField(f Field, at Stamp) {
	i, ok := slices.BinarySearchFunc(o.Fields, f.Name, func(x FieldState, n string) int {
		return cmpStr(x.Name, n)
	})
	if !ok {
		o.Fields = slices.Insert(o.Fields, i, FieldState{Name: f.Name, Value: f.Value, At: at})
		return
	}
	if o.Fields[i].At.Less(at) {
		o.Fields[i].Value, o.Fields[i].At = f.Value, at
	}
}

func (o *Object) counter(name string) *CounterState {
	i, ok := slices.BinarySearchFunc(o.Counters, name, func(x CounterState, n string) int {
		return cmpStr(x.Name, n)
	})
	if !ok {
		o.Counters = slices.Insert(o.Counters, i, CounterState{Name: name})
	}
	return &o.Counters[i]
}

func (o *Object) set(name string) *SetState {
	i, ok := slices.BinarySearchFunc(o.Sets, name, func(x SetState, n string) int {
		return cmpStr(x.Name, n)
	})
	if !ok {
		o.Sets = slices.Insert(o.Sets, i, SetState{Name: name})
	}
	return &o.Sets[i]
}

func (o *Object) elem(field string, value []byte) *SetElem {
	s := o.set(field)
	i, ok := slices.BinarySearchFunc(s.Elems, value, func(e SetElem, v []byte) int {
		return bytes.Compare(e.Value, v)
	})
	if !ok {
		s.Elems = slices.Insert(s.Elems, i, SetElem{Value: value})
	}
	return &s.Elems[i]
}

func (o *Object) removeTags(b *SetRemove) {
	si, ok := slices.BinarySearchFunc(o.Sets, b.Field, func(x SetState, n string) int {
		return cmpStr(x.Name, n)
	})
	if !ok {
		return
	}
	s := &o.Sets[si]
	i, ok := slices.BinarySearchFunc(s.Elems, b.Elem, func(e SetElem, v []byte) int {
		return bytes.Compare(e.Value, v)
	})
	if !ok {
		return
	}
	e := &s.Elems[i]
	e.Tags = slices.DeleteFunc(e.Tags, func(t Hash) bool {
		_, found := slices.BinarySearchFunc(b.Tags, t, cmpHash)
		return found
	})
	if len(e.Tags) == 0 {
		s.Elems = slices.Delete(s.Elems, i, i+1)
	}
	if len(s.Elems) == 0 {
		o.Sets = slices.Delete(o.Sets, si, si+1)
	}
}

func cmpHash(a, b Hash) int { return bytes.Compare(a[:], b[:]) }

// visible reports whether the object shows in queries.
func (o *Object) visible() bool { return !o.Deleted && !o.Created.IsZero() }

// encode writes the object's full state, for storage. Its start is what
// digest hashes, so encode fills in the digest on the way.
func (o *Object) encode() []byte {
	w := writer{b: make([]byte, 0, 256)}
	w.str(o.Key.Collection)
	w.str(o.Key.ID)
	o.encodeVisible(&w)
	o.dig, o.digOK = sha256.Sum256(w.b), true
	for _, f := range o.Fields {
		w.stamp(f.At)
	}
	for _, s := range o.Sets {
		for _, e := range s.Elems {
			w.u32(uint32(len(e.Tags)))
			for _, t := range e.Tags {
				w.hash(t)
			}
		}
	}
	w.flag(o.Deleted)
	w.stamp(o.Updated)
	w.stamp(o.Tomb)
	return w.b
}

// encodeVisible writes what a reader of the object can see, and nothing
// that depends on how the state was reached.
func (o *Object) encodeVisible(w *writer) {
	w.stamp(o.Created)
	w.u32(uint32(len(o.Fields)))
	for _, f := range o.Fields {
		w.str(f.Name)
		w.bytes(f.Value)
	}
	w.u32(uint32(len(o.Counters)))
	for _, c := range o.Counters {
		w.str(c.Name)
		w.i64(c.Value)
	}
	w.u32(uint32(len(o.Sets)))
	for _, s := range o.Sets {
		w.str(s.Name)
		w.u32(uint32(len(s.Elems)))
		for _, e := range s.Elems {
			w.bytes(e.Value)
		}
	}
}

// MaxObjectSize bounds a stored object's encoding that decodeObject
// accepts. Objects are read from local storage only, and grow with the
// fields written to them; the bound is a guard against a damaged store.
const MaxObjectSize = 256 << 20

func decodeObject(b []byte) (*Object, error) {
	if len(b) > MaxObjectSize {
		return nil, fmt.Errorf("decode object: %w: %d bytes", ErrTooLarge, len(b))
	}
	r := reader{b: b}
	o := &Object{Key: ObjectKey{Collection: r.str(), ID: r.str()}}
	o.Created = r.stamp()
	o.Fields = make([]FieldState, r.count(8))
	for i := range o.Fields {
		o.Fields[i] = FieldState{Name: r.str(), Value: r.bytes()}
	}
	o.Counters = make([]CounterState, r.count(12))
	for i := range o.Counters {
		o.Counters[i] = CounterState{Name: r.str(), Value: r.i64()}
	}
	o.Sets = make([]SetState, r.count(8))
	for i := range o.Sets {
		s := &o.Sets[i]
		s.Name = r.str()
		s.Elems = make([]SetElem, r.count(4))
		for j := range s.Elems {
			s.Elems[j].Value = r.bytes()
		}
	}
	if r.err == nil {
		o.dig, o.digOK = sha256.Sum256(b[:len(b)-len(r.b)]), true
	}
	for i := range o.Fields {
		o.Fields[i].At = r.stamp()
	}
	for i := range o.Sets {
		for j := range o.Sets[i].Elems {
			e := &o.Sets[i].Elems[j]
			e.Tags = make([]Hash, r.count(32))
			for k := range e.Tags {
				e.Tags[k] = r.hash()
			}
		}
	}
	o.Deleted = r.flag()
	o.Updated = r.stamp()
	o.Tomb = r.stamp()
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	return o, nil
}

// digest hashes the object's visible state; invisible objects hash to zero
// so they drop out of the realm digest.
func (o *Object) digest() Hash {
	switch {
	case o == nil || !o.visible():
		return Hash{}
	case !o.digOK:
		o.encode()
	}
	return o.dig
}

func xorInto(dst *Hash, h Hash) {
	for i := range dst {
		dst[i] ^= h[i]
	}
}

// objectOf returns the object a data op touches.
func objectOf(b Body) (ObjectKey, bool) {
	switch b := b.(type) {
	case *Set:
		return ObjectKey{b.Collection, b.ID}, true
	case *Delete:
		return ObjectKey{b.Collection, b.ID}, true
	case *Counter:
		return ObjectKey{b.Collection, b.ID}, true
	case *SetAdd:
		return ObjectKey{b.Collection, b.ID}, true
	case *SetRemove:
		return ObjectKey{b.Collection, b.ID}, true
	}
	return ObjectKey{}, false
}
