package invite

import (
	"bytes"
	"testing"
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
