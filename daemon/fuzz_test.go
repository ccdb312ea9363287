package daemon

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"maps"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/realmsync/realmsync/crdt"
)

// sampleChain signs n chat messages as one author's chain in a realm.
func sampleChain(tb testing.TB, n int) []*crdt.Op {
	tb.Helper()
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	var author crdt.PublicKey
	copy(author[:], priv.Public().(ed25519.PublicKey))
	var ops []*crdt.Op
	for i := range n {
		op := &crdt.Op{Realm: crdt.RealmID{7}, Author: author, Seq: uint64(i + 1),
			Clock: crdt.MakeTimestamp(int64(1000+i), 0), Body: message("m")}
		if i > 0 {
			op.Prev = ops[i-1].Hash()
		}
		if err := op.Sign(priv); err != nil {
			tb.Fatal(err)
		}
		ops = append(ops, op)
	}
	return ops
}

// FuzzDecodeAsk feeds arbitrary bytes to the catch-up request decoder. What
// it accepts must survive encoding and decoding again unchanged.
func FuzzDecodeAsk(f *testing.F) {
	f.Add((&ask{}).encode())
	f.Add((&ask{realms: []realmVV{{id: crdt.RealmID{1}, vv: map[crdt.PublicKey]uint64{{2}: 9, {3}: 1}}}}).encode())
	f.Add([]byte{syncVersion, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := decodeAsk(data)
		if err != nil {
			return
		}
		again, err := decodeAsk(a.encode())
		if err != nil {
			t.Fatalf("re-encoded ask refused: %v", err)
		}
		if len(again.realms) != len(a.realms) {
			t.Fatalf("%d realms, then %d", len(a.realms), len(again.realms))
		}
		for i := range a.realms {
			if a.realms[i].id != again.realms[i].id || !maps.Equal(a.realms[i].vv, again.realms[i].vv) {
				t.Fatalf("realm %d changed in a round trip", i)
			}
		}
	})
}

// FuzzDecodeRange feeds arbitrary bytes to the catch-up range decoder. What
// it accepts is one author's consecutive ops, and encodes back to the
// same bytes.
func FuzzDecodeRange(f *testing.F) {
	ops := sampleChain(f, 3)
	f.Add(encodeRange(crdt.RealmID{7}, ops))
	f.Add(encodeRange(crdt.RealmID{7}, ops[:1]))
	f.Add(encodeRange(crdt.RealmID{7}, []*crdt.Op{ops[0], ops[2]}))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, got, err := decodeRange(data)
		if err != nil {
			return
		}
		for i := 1; i < len(got); i++ {
			if got[i].Author != got[0].Author || got[i].Seq != got[i-1].Seq+1 {
				t.Fatalf("accepted ops out of chain order")
			}
		}
		if again := encodeRange(id, got); !bytes.Equal(again, data) {
			t.Fatalf("range decode/encode not symmetric")
		}
	})
}

// FuzzDecodeGroup feeds arbitrary bytes to the gossip message decoder.
// What it accepts is a bounded list of well-formed ops that encodes back
// to the same bytes.
func FuzzDecodeGroup(f *testing.F) {
	ops := sampleChain(f, 3)
	f.Add(encodeGroup(ops))
	f.Add(encodeGroup(ops[2:]))
	f.Add([]byte{0x80, 0x00})
	f.Add(append(binary.AppendUvarint(nil, uint64(len(ops[0].Bytes()))), ops[0].Bytes()...)) // a group of one: not canonical
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeGroup(data)
		if err != nil {
			return
		}
		if len(got) == 0 || len(got) > crdt.MaxGroupOps {
			t.Fatalf("accepted %d ops", len(got))
		}
		if again := encodeGroup(got); !bytes.Equal(again, data) {
			t.Fatalf("group decode/encode not symmetric")
		}
	})
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader: it must refuse
// an oversized frame before reading it, and what it reads must write back
// as the same bytes.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	writeFrame(w, frameDone, nil)
	writeFrame(w, frameAsk, (&ask{}).encode())
	w.Flush()
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, frameRange})
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, payload, err := readFrame(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(payload)+1 > maxFrame {
			t.Fatalf("read a frame of %d bytes", len(payload)+1)
		}
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		if err := writeFrame(w, typ, payload); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if !bytes.Equal(out.Bytes(), data[:out.Len()]) {
			t.Fatalf("frame read/write not symmetric")
		}
	})
}

// FuzzPeerRecord feeds arbitrary bytes to the address book's decoder,
// which reads what a damaged disk might hold.
func FuzzPeerRecord(f *testing.F) {
	f.Add(encodePeerRecord([]ma.Multiaddr{
		ma.StringCast("/ip4/127.0.0.1/tcp/7701"),
		ma.StringCast("/ip4/192.168.1.2/udp/7701/quic-v1"),
	}))
	f.Add(encodePeerRecord(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		addrs, err := decodePeerRecord(data)
		if err != nil {
			return
		}
		if len(addrs) > maxAddrsPerPeer {
			t.Fatalf("accepted %d addresses", len(addrs))
		}
		if again := encodePeerRecord(addrs); !bytes.Equal(again, data) {
			t.Fatalf("record decode/encode not symmetric")
		}
	})
}

// FuzzDecodeAddrs feeds arbitrary bytes to the decoder of a member's
// answer with its fellows' addresses: what it accepts stays within the
// limits and encodes back to the same bytes.
func FuzzDecodeAddrs(f *testing.F) {
	id, err := peer.Decode("12D3KooWD43WQcLduJuQxQRegUQcCxBzg47gpoxzYedKoq6xKqUT")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(encodeAddrs(nil))
	f.Add(encodeAddrs([]memberAddrs{{id, []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.2/tcp/7701")}}}))
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := decodeAddrs(data)
		if err != nil {
			return
		}
		if len(entries) > maxAddrsPeers || len(data) > maxAddrsMessage {
			t.Fatalf("accepted %d members in %d bytes", len(entries), len(data))
		}
		if again := encodeAddrs(entries); !bytes.Equal(again, data) {
			t.Fatalf("decode/encode not symmetric")
		}
	})
}

// FuzzKeyMessages feeds arbitrary bytes to the decoders of a member's ask
// for epoch keys and of the answer: what either accepts stays within the
// limits and encodes back to the same bytes.
func FuzzKeyMessages(f *testing.F) {
	f.Add((&keyAsk{realm: crdt.RealmID{1}, epochs: []uint32{0, 3}}).encode())
	f.Add(encodeKeys([]crdt.RealmKey{{Epoch: 1, Key: crdt.EpochKey{9}}, {Epoch: 1, Key: crdt.EpochKey{8}}}))
	f.Add(encodeKeys(nil))
	f.Add([]byte{keysVersion, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		if a, err := decodeKeyAsk(data); err == nil {
			if len(a.epochs) == 0 || len(a.epochs) > maxKeysAsked || len(data) > maxKeysAskSize {
				t.Fatalf("accepted an ask for %d epochs in %d bytes", len(a.epochs), len(data))
			}
			if !bytes.Equal(a.encode(), data) {
				t.Fatal("ask: decode/encode not symmetric")
			}
		}
		if keys, err := decodeKeys(data); err == nil {
			if len(keys) > maxKeysAnswer || len(data) > maxKeysSize {
				t.Fatalf("accepted %d keys in %d bytes", len(keys), len(data))
			}
			if !bytes.Equal(encodeKeys(keys), data) {
				t.Fatal("answer: decode/encode not symmetric")
			}
		}
	})
}
