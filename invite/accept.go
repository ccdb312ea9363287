package invite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/realmsync/realmsync/crdt"
)

// AcceptProtocol is the libp2p protocol of the acceptance handshake: the
// invitee opens a stream to a node named in the offer, writes one
// Request, and reads one Response; then the stream closes.
const AcceptProtocol = "/realmsync/accept/1"

// Limits of the handshake's messages.
const (
	MaxKeys         = 1024 // epoch keys handed over
	MaxDetailSize   = 255  // bytes of a refusal's detail
	MaxRequestSize  = 2 + MaxOfferSize + 1 + MaxNameSize + 8
	MaxResponseSize = 1 + 1 + 32 + 1 + MaxDetailSize + 32 + 1 + MaxNameSize + 1 + 2 + MaxKeys*(4+32)
)

const acceptV1 = 1

// Request is what the invitee presents: the offer, its display name, and
// the head of its own chain in the realm (0 unless it was a member once,
// so that the grant starts its membership after its earlier ops).
type Request struct {
	Offer []byte // the binary offer
	Name  string
	Head  uint64
}

// Response is the honouring node's answer: on success the realm, the
// role and the realm's epoch keys, which open what its members write;
// else a refusal's code and detail. The stream it travels on is
// encrypted and authenticated to the invitee's node key.
type Response struct {
	Code   string // "" on success, else a code of Code
	Detail string // why, for a person

	Realm     crdt.RealmID
	RealmName string
	Role      crdt.Role
	Keys      []crdt.RealmKey // by epoch, then key
}

// Marshal encodes a request: version byte, uint16 offer length, offer,
// name length byte, name, uint64 head.
func (r *Request) Marshal() []byte {
	b := []byte{acceptV1}
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Offer)))
	b = append(b, r.Offer...)
	b = append(b, byte(len(r.Name)))
	b = append(b, r.Name...)
	return binary.BigEndian.AppendUint64(b, r.Head)
}

// UnmarshalRequest decodes a request; the offer inside is not decoded.
func UnmarshalRequest(b []byte) (*Request, error) {
	if len(b) > MaxRequestSize {
		return nil, fmt.Errorf("%w: request of %d bytes", ErrInvalidToken, len(b))
	}
	rd := reader{b: b}
	if v := rd.byte(); v != acceptV1 {
		return nil, fmt.Errorf("%w: request version %d", ErrInvalidToken, v)
	}
	r := &Request{}
	r.Offer = rd.bytes(int(rd.uint16()))
	r.Name = string(rd.bytes(int(rd.byte())))
	r.Head = rd.uint64()
	switch {
	case rd.err != nil || len(rd.b) != 0:
		return nil, fmt.Errorf("%w: malformed request", ErrInvalidToken)
	case len(r.Name) > MaxNameSize || !utf8.ValidString(r.Name):
		return nil, fmt.Errorf("%w: display name", ErrInvalidToken)
	}
	return r, nil
}

// Marshal encodes a response: version byte, code (length byte and text),
// detail (length byte and text), realm id, realm name (length byte and
// text), role byte, then a uint16 count of keys and each key as a uint32
// epoch and 32 bytes. The keys must be in order: by epoch, then by bytes.
func (r *Response) Marshal() []byte {
	b := []byte{acceptV1}
	b = append(b, byte(len(r.Code)))
	b = append(b, r.Code...)
	detail := truncate(r.Detail, MaxDetailSize)
	b = append(b, byte(len(detail)))
	b = append(b, detail...)
	b = append(b, r.Realm[:]...)
	name := truncate(r.RealmName, MaxNameSize)
	b = append(b, byte(len(name)))
	b = append(b, name...)
	b = append(b, byte(r.Role))
	keys := r.Keys[:min(len(r.Keys), MaxKeys)]
	b = binary.BigEndian.AppendUint16(b, uint16(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, k.Epoch)
		b = append(b, k.Key[:]...)
	}
	return b
}

// truncate cuts s to at most n bytes, at the start of a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// UnmarshalResponse decodes a response.
func UnmarshalResponse(b []byte) (*Response, error) {
	if len(b) > MaxResponseSize {
		return nil, fmt.Errorf("response of %d bytes", len(b))
	}
	rd := reader{b: b}
	if v := rd.byte(); v != acceptV1 {
		return nil, fmt.Errorf("response version %d", v)
	}
	r := &Response{}
	r.Code = string(rd.bytes(int(rd.byte())))
	r.Detail = string(rd.bytes(int(rd.byte())))
	rd.fixed(r.Realm[:])
	r.RealmName = string(rd.bytes(int(rd.byte())))
	r.Role = crdt.Role(rd.byte())
	nkeys := int(rd.uint16())
	if nkeys > MaxKeys {
		return nil, fmt.Errorf("response with %d keys", nkeys)
	}
	for i := range nkeys {
		k := crdt.RealmKey{Epoch: rd.uint32()}
		rd.fixed(k.Key[:])
		if i > 0 && !keyBefore(r.Keys[i-1], k) {
			return nil, fmt.Errorf("response with keys out of order")
		}
		r.Keys = append(r.Keys, k)
	}
	switch {
	case rd.err != nil || len(rd.b) != 0:
		return nil, fmt.Errorf("malformed response")
	case r.Code != "" && ErrorOf(r.Code) == nil:
		return nil, fmt.Errorf("response with unknown code %q", r.Code)
	case len(r.RealmName) > MaxNameSize || !utf8.ValidString(r.RealmName) || !utf8.ValidString(r.Detail):
		return nil, fmt.Errorf("response with a bad name or detail")
	}
	return r, nil
}

// keyBefore orders keys by epoch, then by their bytes.
func keyBefore(x, y crdt.RealmKey) bool {
	return x.Epoch < y.Epoch || x.Epoch == y.Epoch && bytes.Compare(x.Key[:], y.Key[:]) < 0
}

// RefusedError is a refusal that the honouring node sent back.
type RefusedError struct {
	Code   string
	Detail string
}

// Error says the code and why.
func (e *RefusedError) Error() string { return fmt.Sprintf("offer refused: %s: %s", e.Code, e.Detail) }

// Unwrap returns the package's error of the code, so that errors.Is and
// Code see it.
func (e *RefusedError) Unwrap() error { return ErrorOf(e.Code) }

// UnreachableError lists the addresses that were tried, and why each
// failed, when no node named in an offer answered.
type UnreachableError struct {
	Tried []AddrError
}

// AddrError is one address tried, and what went wrong there.
type AddrError struct {
	Addr string
	Err  string
}

// Error lists each address tried and what went wrong there.
func (e *UnreachableError) Error() string {
	s := ErrUnreachable.Error()
	for _, a := range e.Tried {
		s += fmt.Sprintf("; %s: %s", a.Addr, a.Err)
	}
	return s
}

// Unwrap returns ErrUnreachable.
func (e *UnreachableError) Unwrap() error { return ErrUnreachable }
