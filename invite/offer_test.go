package invite

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/realmsync/realmsync/crdt"
)

func key(seed byte) (ed25519.PrivateKey, crdt.PublicKey) {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	priv := ed25519.NewKeyFromSeed(s)
	var pub crdt.PublicKey
	copy(pub[:], priv.Public().(ed25519.PublicKey))
	return priv, pub
}

func addrs(ss ...string) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, s := range ss {
		out = append(out, ma.StringCast(s))
	}
	return out
}

// sample is a signed offer naming three nodes: the issuer with a TCP and a
// QUIC address, and two other admins with one address each.
func sample(t testing.TB) (*Offer, ed25519.PrivateKey) {
	t.Helper()
	priv, issuer := key(1)
	_, b := key(2)
	_, c := key(3)
	issued := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	o := &Offer{
		Realm:     crdt.RealmID{0xaa, 0xbb},
		RealmName: "family photos",
		Role:      crdt.RoleWriter,
		ID:        crdt.OfferID{1, 2, 3},
		Issuer:    issuer,
		IssuedAt:  issued,
		ExpiresAt: issued.Add(24 * time.Hour),
		MaxUses:   1,
		Nodes: []Node{
			{Key: issuer, Addrs: addrs("/ip4/192.168.1.20/tcp/7701", "/ip4/192.168.1.20/udp/7701/quic-v1")},
			{Key: b, Addrs: addrs("/ip4/203.0.113.7/tcp/7701")},
			{Key: c, Addrs: addrs("/ip6/2001:db8::7/udp/7701/quic-v1")},
		},
	}
	if err := o.Sign(priv); err != nil {
		t.Fatal(err)
	}
	return o, priv
}

func TestTextRoundTrip(t *testing.T) {
	o, _ := sample(t)
	text := o.Text()
	if len(text) >= 600 {
		t.Errorf("token of %d characters, want under 600", len(text))
	}
	for _, r := range text {
		if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567-", r) {
			t.Fatalf("token holds %q, outside A-Z, 2-7 and '-'", r)
		}
	}
	for _, in := range []string{text, "  " + strings.ToLower(text) + "\n"} {
		got, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if err := got.Verify(); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if got.Text() != text {
			t.Fatalf("round trip changed the token")
		}
		if got.RealmName != o.RealmName || got.Role != o.Role || !got.ExpiresAt.Equal(o.ExpiresAt) ||
			len(got.Nodes) != 3 || !got.Nodes[2].Addrs[0].Equal(o.Nodes[2].Addrs[0]) {
			t.Fatalf("round trip changed fields: %+v", got)
		}
	}
}

// TestEveryChangeRefused: a token with any one character changed, or cut
// short anywhere, is refused, by Parse or by Verify.
func TestEveryChangeRefused(t *testing.T) {
	o, _ := sample(t)
	text := o.Text()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	accepted := func(s string) bool {
		got, err := Parse(s)
		return err == nil && got.Verify() == nil
	}
	for i := range len(text) {
		for _, r := range alphabet + "-" {
			if byte(r) == text[i] {
				continue
			}
			changed := text[:i] + string(r) + text[i+1:]
			if accepted(changed) {
				t.Fatalf("accepted the token with character %d changed to %q", i, r)
			}
		}
		if i > 0 && accepted(text[:i]) {
			t.Fatalf("accepted the token cut to %d characters", i)
		}
	}
}

func TestRefusedCodes(t *testing.T) {
	o, _ := sample(t)
	other, _ := key(9)
	cases := []struct {
		name string
		text string
		want error
	}{
		{"wrong prefix", "REALM-" + strings.TrimPrefix(o.Text(), Prefix), ErrInvalidToken},
		{"empty", "", ErrInvalidToken},
		{"not base32", Prefix + "0189!", ErrInvalidToken},
		{"too long", Prefix + strings.Repeat("A", MaxTextSize), ErrInvalidToken},
		{"signed by another key", func() string {
			bad := *o
			copy(bad.Sig[:], ed25519.Sign(other, bad.appendUnsigned([]byte(signContext))))
			return bad.Text()
		}(), ErrBadSignature},
		{"issuer swapped", func() string {
			bad := *o
			_, bad.Issuer = key(9)
			bad.Nodes = append([]Node{{Key: bad.Issuer, Addrs: o.Nodes[0].Addrs}}, o.Nodes[1:]...)
			return bad.Text()
		}(), ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.text)
			if err == nil {
				err = got.Verify()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if Code(err) != Code(tc.want) || Code(err) == "" {
				t.Fatalf("code %q, want %q", Code(err), Code(tc.want))
			}
		})
	}
}

func TestSignRefusesBadOffers(t *testing.T) {
	cases := map[string]func(o *Offer){
		"no uses":                func(o *Offer) { o.MaxUses = 0 },
		"role none":              func(o *Offer) { o.Role = crdt.RoleNone },
		"role unknown":           func(o *Offer) { o.Role = 9 },
		"no nodes":               func(o *Offer) { o.Nodes = nil },
		"issuer not first":       func(o *Offer) { o.Nodes[0], o.Nodes[1] = o.Nodes[1], o.Nodes[0] },
		"long name":              func(o *Offer) { o.RealmName = strings.Repeat("x", MaxNameSize+1) },
		"expired at birth":       func(o *Offer) { o.ExpiresAt = o.IssuedAt },
		"node without addresses": func(o *Offer) { o.Nodes[1].Addrs = nil },
		"too many nodes": func(o *Offer) {
			for len(o.Nodes) <= MaxNodes {
				o.Nodes = append(o.Nodes, o.Nodes[1])
			}
		},
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			o, priv := sample(t)
			change(o)
			if err := o.Sign(priv); err == nil {
				t.Fatal("signed a broken offer")
			}
		})
	}
	o, _ := sample(t)
	other, _ := key(9)
	if err := o.Sign(other); err == nil {
		t.Fatal("signed with a key that is not the issuer's")
	}
}

func TestCodes(t *testing.T) {
	for _, c := range codes {
		if got := Code(c.err); got != c.code {
			t.Errorf("Code(%v) = %q, want %q", c.err, got, c.code)
		}
		if got := ErrorOf(c.code); got != c.err {
			t.Errorf("ErrorOf(%q) = %v, want %v", c.code, got, c.err)
		}
	}
	if Code(errors.New("other")) != "" || ErrorOf("other") != nil {
		t.Error("an unknown error or code maps to something")
	}
}

func TestResponseTruncatesAtCharacters(t *testing.T) {
	r := &Response{Code: "revoked", Detail: strings.Repeat("é", MaxDetailSize)}
	got, err := UnmarshalResponse(r.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Detail) > MaxDetailSize || !strings.HasPrefix(r.Detail, got.Detail) {
		t.Fatalf("detail of %d bytes", len(got.Detail))
	}
}
