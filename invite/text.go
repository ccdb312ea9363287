package invite

import (
	"encoding/base32"
	"fmt"
	"strings"
)

// Prefix starts the text form of every offer.
const Prefix = "REALMSYNC-"

// MaxTextSize bounds the text of a token that Parse reads.
const MaxTextSize = 2 * MaxOfferSize

// b32 is RFC 4648 base32 without padding: A-Z and 2-7, all of them in the
// QR code's alphanumeric mode, none of them special to a shell or a chat
// app.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Text returns the offer's text form: Prefix, then its binary encoding in
// base32. It is one line, safe to paste anywhere.
func (o *Offer) Text() string { return Prefix + b32.EncodeToString(o.Marshal()) }

// Parse reads the text form of an offer. Space around it and lower case
// (which some apps make of pasted text) are forgiven. It checks the shape,
// not the signature: call Verify.
func Parse(text string) (*Offer, error) {
	if len(text) > MaxTextSize {
		return nil, fmt.Errorf("%w: %d characters", ErrInvalidToken, len(text))
	}
	text = strings.ToUpper(strings.TrimSpace(text))
	body, ok := strings.CutPrefix(text, Prefix)
	if !ok {
		return nil, fmt.Errorf("%w: it does not start with %s", ErrInvalidToken, Prefix)
	}
	raw, err := b32.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	o, err := Unmarshal(raw)
	if err != nil {
		return nil, err
	}
	if o.Text() != text {
		// base32 leaves slack in the last character's low bits.
		return nil, fmt.Errorf("%w: not in canonical form", ErrInvalidToken)
	}
	return o, nil
}
