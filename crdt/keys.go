package crdt

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// Storage keys. Every key is printable text: hex where it holds binary or
// user-chosen data, since hex keeps byte order and never contains '/'.
// All keys of one realm share the prefix "r/<realm id>/".
//
//	realms/<id>                       a realm this store holds
//	r/<id>/meta                       name, genesis author, creation time
//	r/<id>/dig                        XOR of the digests of all objects
//	r/<id>/nc                         how many messages are visible
//	r/<id>/na                         how many entries the arrival log has
//	r/<id>/h/<author>                 chain head: seq, hash, clock
//	r/<id>/o/<author>/<seq>           an op, canonical encoding
//	r/<id>/g/<stamp>                  a membership op, in realm order
//	r/<id>/e/<author>                 first equivocated seq of an author
//	r/<id>/b/<coll>/<obj>             an object's materialised state
//	r/<id>/x/<coll>/<obj>/<stamp>     an op that touched the object
//	r/<id>/n/<stamp>                  a message, in realm order
//	r/<id>/v/<n>                      the arrival log: the messages that
//	                                  became visible here in one engine
//	                                  call, the last of them the n-th
//	r/<id>/y/<coll>/<obj>             a message an op touched before the
//	                                  op that creates it (see apply.go)
const realmsPrefix = "realms/"

type keys struct{ p string }

func newKeys(id RealmID) keys { return keys{p: "r/" + id.String() + "/"} }

func (k keys) meta() string             { return k.p + "meta" }
func (k keys) digest() string           { return k.p + "dig" }
func (k keys) messageCount() string     { return k.p + "nc" }
func (k keys) arrivalCount() string     { return k.p + "na" }
func (k keys) arrivals() string         { return k.p + "v/" }
func (k keys) heads() string            { return k.p + "h/" }
func (k keys) head(a PublicKey) string  { return k.build("h/", string(a[:])) }
func (k keys) equivs() string           { return k.p + "e/" }
func (k keys) equiv(a PublicKey) string { return k.build("e/", string(a[:])) }
func (k keys) mships() string           { return k.p + "g/" }
func (k keys) mship(s Stamp) string     { return k.build("g/", stampBytes(s)) }
func (k keys) messages() string         { return k.p + "n/" }
func (k keys) message(s Stamp) string   { return k.build("n/", stampBytes(s)) }

func (k keys) collection(c string) string   { return k.build("b/", c, "") }
func (k keys) object(o ObjectKey) string    { return k.build("b/", o.Collection, o.ID) }
func (k keys) objectOps(o ObjectKey) string { return k.build("x/", o.Collection, o.ID, "") }
func (k keys) earlies() string              { return k.p + "y/" }
func (k keys) early(o ObjectKey) string     { return k.build("y/", o.Collection, o.ID) }

func (k keys) objectOp(o ObjectKey, s Stamp) string {
	return k.build("x/", o.Collection, o.ID, stampBytes(s))
}

func (k keys) arrival(n uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return k.build("v/", string(b[:]))
}

// parseArrivalKey parses the hex position that ends an arrival log key.
func parseArrivalKey(s string) (uint64, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 8 {
		return 0, fmt.Errorf("%w: arrival log key %q", ErrMalformed, s)
	}
	return binary.BigEndian.Uint64(b), nil
}

func (k keys) op(a PublicKey, seq uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return k.build("o/", string(a[:]), string(b[:]))
}

// build returns the realm prefix, then kind, then each part in hex, the
// parts separated by '/'. An empty last part leaves a trailing '/'.
func (k keys) build(kind string, parts ...string) string {
	const digits = "0123456789abcdef"
	n := len(k.p) + len(kind)
	for _, p := range parts {
		n += 2*len(p) + 1
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(k.p)
	b.WriteString(kind)
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('/')
		}
		for j := 0; j < len(p); j++ {
			b.WriteByte(digits[p[j]>>4])
			b.WriteByte(digits[p[j]&0xf])
		}
	}
	return b.String()
}

func hexStr(s string) string { return hex.EncodeToString([]byte(s)) }

// stampKey encodes a stamp so that key order is realm order.
func stampKey(s Stamp) string { return hex.EncodeToString([]byte(stampBytes(s))) }

// stampBytes is the binary form of a stamp that stampKey writes in hex.
func stampBytes(s Stamp) string {
	var b [8 + 32 + 8]byte
	binary.BigEndian.PutUint64(b[:8], uint64(s.Clock))
	copy(b[8:40], s.Author[:])
	binary.BigEndian.PutUint64(b[40:], s.Seq)
	return string(b[:])
}

func parseStampKey(k string) (Stamp, error) {
	var b [8 + 32 + 8]byte
	if len(k) != 2*len(b) {
		return Stamp{}, fmt.Errorf("%w: stamp key of %d bytes", ErrMalformed, len(k))
	}
	if _, err := hex.Decode(b[:], []byte(k)); err != nil {
		return Stamp{}, fmt.Errorf("%w: stamp key: %v", ErrMalformed, err)
	}
	var s Stamp
	s.Clock = Timestamp(binary.BigEndian.Uint64(b[:8]))
	copy(s.Author[:], b[8:40])
	s.Seq = binary.BigEndian.Uint64(b[40:])
	return s, nil
}

// parseObjectKey reads the "<collection>/<id>" end of a key, both parts
// in hex.
func parseObjectKey(k string) (ObjectKey, error) {
	c, id, ok := strings.Cut(k, "/")
	coll, err1 := hex.DecodeString(c)
	obj, err2 := hex.DecodeString(id)
	if !ok || err1 != nil || err2 != nil {
		return ObjectKey{}, fmt.Errorf("%w: object key %q", ErrMalformed, k)
	}
	return ObjectKey{string(coll), string(obj)}, nil
}
