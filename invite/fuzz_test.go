package invite

import (
	"bytes"
	"testing"

	"github.com/realmsync/realmsync/crdt"
)

// FuzzParse feeds arbitrary text to the token parser. What it accepts is
// the canonical text of the offer it decodes, and checking its signature
// must not panic.
func FuzzParse(f *testing.F) {
	o, _ := sample(f)
	f.Add(o.Text())
	f.Add(Prefix)
	f.Add(Prefix + "AAAA")
	f.Fuzz(func(t *testing.T, text string) {
		got, err := Parse(text)
		if err != nil {
			return
		}
		if len(got.Text()) > MaxTextSize {
			t.Fatalf("accepted a token of %d characters", len(got.Text()))
		}
		_ = got.Verify()
	})
}

// FuzzUnmarshal feeds arbitrary bytes to the binary decoder. What it
// accepts encodes back to the same bytes.
func FuzzUnmarshal(f *testing.F) {
	o, _ := sample(f)
	f.Add(o.Marshal())
	f.Add([]byte{Version})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Unmarshal(data)
		if err != nil {
			return
		}
		if !bytes.Equal(got.Marshal(), data) {
			t.Fatalf("decode/encode not symmetric")
		}
	})
}

// FuzzRequest feeds arbitrary bytes to the acceptance request decoder.
func FuzzRequest(f *testing.F) {
	o, _ := sample(f)
	f.Add((&Request{Offer: o.Marshal(), Name: "bob's phone", Head: 0}).Marshal())
	f.Add([]byte{acceptV1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := UnmarshalRequest(data)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Marshal(), data) {
			t.Fatalf("request decode/encode not symmetric")
		}
	})
}

// FuzzResponse feeds arbitrary bytes to the acceptance response decoder.
func FuzzResponse(f *testing.F) {
	f.Add((&Response{Realm: [32]byte{1}, RealmName: "family", Role: 2}).Marshal())
	f.Add((&Response{Code: "expired", Detail: "expired an hour ago"}).Marshal())
	f.Add((&Response{Realm: [32]byte{2}, Role: 3, Keys: []crdt.RealmKey{{Epoch: 0, Key: crdt.EpochKey{1}}, {Epoch: 4, Key: crdt.EpochKey{2}}}}).Marshal())
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := UnmarshalResponse(data)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Marshal(), data) {
			t.Fatalf("response decode/encode not symmetric")
		}
	})
}
