package daemon

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/realmsync/realmsync/crdt"
)

// Limits of the catch-up protocol's frames. A frame over maxFrame, or a
// count over its limit, ends the exchange before anything is read into
// memory past the length.
const (
	maxFrame          = 2 << 20 // bytes of one frame, type byte included
	maxRealmsPerAsk   = 4096
	maxAuthorsPerAsk  = 1 << 16 // per realm
	maxOpsPerRange    = crdt.MaxRangeOps
	rangeTargetOps    = maxOpsPerRange - crdt.MaxGroupOps // a range is closed at the next signed op once this long
	rangeTargetBytes  = 1 << 20                           // or once this full
	syncVersion       = 1
	frameAsk          = 1
	frameRange        = 2
	frameDone         = 3
	frameHeaderLength = 4 + 1
)

// errFrame marks a frame that breaks the protocol.
var errFrame = errors.New("bad catch-up frame")

// ask is the catch-up request: per realm, what the asker holds.
type ask struct {
	push   bool // the asker has news: pull from it in turn if it is ahead
	realms []realmVV
}

// askPush is the ask's flag bit for push.
const askPush = 1

type realmVV struct {
	id crdt.RealmID
	vv map[crdt.PublicKey]uint64
}

// writeFrame writes one frame: a big-endian uint32 length of what
// follows, the type byte, the payload.
func writeFrame(w *bufio.Writer, typ byte, payload []byte) error {
	if len(payload)+1 > maxFrame {
		return fmt.Errorf("%w: %d bytes", errFrame, len(payload)+1)
	}
	var hdr [frameHeaderLength]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(payload)+1))
	hdr[4] = typ
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// readFrame reads one frame, refusing one over maxFrame before reading it.
func readFrame(r io.Reader) (typ byte, payload []byte, err error) {
	var hdr [frameHeaderLength]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 1 || n > maxFrame {
		return 0, nil, fmt.Errorf("%w: length %d", errFrame, n)
	}
	payload = make([]byte, n-1)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[4], payload, nil
}

func (a *ask) encode() []byte {
	var flags byte
	if a.push {
		flags |= askPush
	}
	b := []byte{syncVersion, flags}
	b = binary.BigEndian.AppendUint16(b, uint16(len(a.realms)))
	for _, rv := range a.realms {
		b = append(b, rv.id[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(rv.vv)))
		for k, seq := range rv.vv {
			b = append(b, k[:]...)
			b = binary.BigEndian.AppendUint64(b, seq)
		}
	}
	return b
}

// decodeAsk parses an ask frame's payload.
func decodeAsk(b []byte) (*ask, error) {
	if len(b) < 4 || b[0] != syncVersion {
		return nil, fmt.Errorf("%w: ask of version %v", errFrame, b[:min(1, len(b))])
	}
	if b[1]&^askPush != 0 {
		return nil, fmt.Errorf("%w: ask flags %#x", errFrame, b[1])
	}
	nr := int(binary.BigEndian.Uint16(b[2:4]))
	if nr > maxRealmsPerAsk {
		return nil, fmt.Errorf("%w: %d realms", errFrame, nr)
	}
	a := &ask{push: b[1]&askPush != 0}
	b = b[4:]
	seen := make(map[crdt.RealmID]bool, nr)
	for range nr {
		if len(b) < 32+4 {
			return nil, fmt.Errorf("%w: truncated ask", errFrame)
		}
		rv := realmVV{vv: make(map[crdt.PublicKey]uint64)}
		copy(rv.id[:], b)
		na := int(binary.BigEndian.Uint32(b[32:36]))
		b = b[36:]
		if na > maxAuthorsPerAsk || na*(32+8) > len(b) {
			return nil, fmt.Errorf("%w: %d authors", errFrame, na)
		}
		for range na {
			var k crdt.PublicKey
			copy(k[:], b)
			rv.vv[k] = binary.BigEndian.Uint64(b[32:40])
			b = b[40:]
		}
		if len(rv.vv) != na {
			return nil, fmt.Errorf("%w: an author twice", errFrame)
		}
		if seen[rv.id] {
			return nil, fmt.Errorf("%w: a realm twice", errFrame)
		}
		seen[rv.id] = true
		a.realms = append(a.realms, rv)
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the ask", errFrame, len(b))
	}
	return a, nil
}

// encodeRange makes a range frame's payload: the realm, then each op with
// its length.
func encodeRange(id crdt.RealmID, ops []*crdt.Op) []byte {
	n := 32 + 2
	for _, op := range ops {
		n += 4 + len(op.Bytes())
	}
	b := make([]byte, 0, n)
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ops)))
	for _, op := range ops {
		b = binary.BigEndian.AppendUint32(b, uint32(len(op.Bytes())))
		b = append(b, op.Bytes()...)
	}
	return b
}

// decodeRange parses a range frame's payload and decodes its ops, which
// must all continue one author's chain in seq order.
func decodeRange(b []byte) (crdt.RealmID, []*crdt.Op, error) {
	var id crdt.RealmID
	if len(b) < 34 {
		return id, nil, fmt.Errorf("%w: truncated range", errFrame)
	}
	copy(id[:], b)
	n := int(binary.BigEndian.Uint16(b[32:34]))
	if n == 0 || n > maxOpsPerRange {
		return id, nil, fmt.Errorf("%w: range of %d ops", errFrame, n)
	}
	b = b[34:]
	ops := make([]*crdt.Op, 0, n)
	for range n {
		if len(b) < 4 {
			return id, nil, fmt.Errorf("%w: truncated range", errFrame)
		}
		l := int(binary.BigEndian.Uint32(b))
		if l > crdt.MaxOpSize || l > len(b)-4 {
			return id, nil, fmt.Errorf("%w: op of %d bytes", errFrame, l)
		}
		op, err := crdt.DecodeOp(b[4 : 4+l : 4+l])
		if err != nil {
			return id, nil, err
		}
		if len(ops) > 0 && (op.Author != ops[0].Author || op.Seq != ops[len(ops)-1].Seq+1) {
			return id, nil, fmt.Errorf("%w: ops of a range out of order", errFrame)
		}
		ops = append(ops, op)
		b = b[4+l:]
	}
	if len(b) != 0 {
		return id, nil, fmt.Errorf("%w: %d bytes after the range", errFrame, len(b))
	}
	return id, ops, nil
}
