// Package api is the daemon's local HTTP API: JSON under /v1 on a loopback
// address, for the CLI, the web page and anyone's scripts.
//
// The server talks to the node through Backend, a narrow interface in the
// API's own terms (realm ids and peer ids as text, messages and objects as
// JSON), so its tests need no network; NodeBackend adapts a daemon.Node.
//
// # Security
//
// The API listens on loopback only and every request but GET /v1/health
// carries the bearer token kept in the data dir, compared in constant
// time. A request whose Host header is not a loopback name is refused
// with 421, which stops a web page from reaching the API through a DNS
// name rebound to 127.0.0.1; a request from a browser page of another
// origin is refused with 403. Request bodies have size limits (413), and
// a request that is refused changes nothing. Errors are problem+json
// with a stable code.
//
// The web page (package web) signs in with a session cookie instead of
// the token: see session.go.
package api

import (
	"context"
	"encoding/json"
	"time"
)

// Body limits.
const (
	// MaxBodySize bounds a JSON request body.
	MaxBodySize = 64 << 10
	// MaxImageSize bounds an image posted to accept an offer.
	MaxImageSize = 8 << 20
	// MaxMessages is the most messages or objects one list returns.
	MaxMessages = 1000
)

// Status is the node as GET /v1/status shows it.
type Status struct {
	PeerID  string   `json:"peer_id"`
	Name    string   `json:"name"`
	Addrs   []string `json:"addrs"`
	Version string   `json:"version"`
	Realms  int      `json:"realms"`
	Peers   int      `json:"peers"`
}

// Realm is one realm held by the node.
type Realm struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"` // this node's role; "" before the realm arrives
	Members   int       `json:"members"`
	Messages  int       `json:"messages"` // chat messages: a page counts what is unread with it
	CreatedAt time.Time `json:"created_at"`
}

// Member is one member of a realm.
type Member struct {
	PeerID string `json:"peer_id"`
	Name   string `json:"name"`
	Role   string `json:"role"`
	Online bool   `json:"online"`
}

// Message is one chat message.
type Message struct {
	ID         string    `json:"id"`
	Author     string    `json:"author"` // peer id
	AuthorName string    `json:"author_name"`
	Text       string    `json:"text"`
	SentAt     time.Time `json:"sent_at"`
}

// Object is one shared object: its fields as JSON values.
type Object struct {
	ID        string                     `json:"id"`
	Fields    map[string]json.RawMessage `json:"fields"`
	UpdatedAt time.Time                  `json:"updated_at"`
}

// Invite is an offer this node issued, with its uses so far. Token is
// the offer as text, and QRURL the path of its QR code PNG; they are set
// when the invite is created.
type Invite struct {
	OfferID   string    `json:"offer_id"`
	Token     string    `json:"token,omitempty"`
	QRURL     string    `json:"qr_url,omitempty"`
	Role      string    `json:"role"`
	ExpiresAt time.Time `json:"expires_at"`
	MaxUses   int       `json:"max_uses"`
	Uses      int       `json:"uses"`
	Revoked   bool      `json:"revoked"`
}

// Backend is what the API needs of a node. Realm arguments are realm ids
// or realm names that match exactly one realm; peer arguments are peer
// ids. Errors should be *Error where the API is to say more than 500.
type Backend interface {
	Status() Status

	Realms() ([]Realm, error)
	CreateRealm(ctx context.Context, name string) (Realm, error)
	Realm(realm string) (Realm, error)

	Members(realm string) ([]Member, error)
	SetRole(ctx context.Context, realm, peer, role string) (Member, error)
	RemoveMember(ctx context.Context, realm, peer string) error

	Send(ctx context.Context, realm, text string) (Message, error)
	// Messages lists messages in the realm's order, after the message
	// with id after ("" for the first), at most limit.
	Messages(realm, after string, limit int) ([]Message, error)
	// Arrived lists messages in the order they became visible on this
	// node, after position since of that order, at most limit (those
	// gone again are left out); it returns the position of the last one
	// looked at. since math.MaxUint64 asks for the newest position only.
	Arrived(realm string, since uint64, limit int) ([]Message, uint64, error)

	// PutObject sets the fields named and leaves the others as they are.
	PutObject(ctx context.Context, realm, collection, id string, fields map[string]json.RawMessage) (Object, error)
	Object(realm, collection, id string) (Object, error)
	DeleteObject(ctx context.Context, realm, collection, id string) error
	Objects(realm, collection string) ([]Object, error)

	CreateInvite(ctx context.Context, realm, role string, expiresIn time.Duration, maxUses int) (Invite, error)
	Invites(realm string) ([]Invite, error)
	RevokeInvite(ctx context.Context, realm, offer string) error
	// InviteQR returns the QR code of an invite's token as a PNG.
	InviteQR(realm, offer string) ([]byte, error)
	// Accept presents an offer, given as its text, and returns the realm
	// it admitted this node to.
	Accept(ctx context.Context, token string) (Realm, error)
	// AcceptImage is Accept for a PNG or JPEG holding the offer's QR code.
	AcceptImage(ctx context.Context, image []byte) (Realm, error)

	// Changed returns a channel that is closed at the realm's next change.
	Changed(realm string) (<-chan struct{}, error)
	// ObjectChanges returns the objects (chat messages aside) changed
	// since the change numbered since, and the newest number; since
	// math.MaxUint64 asks for that number only. A Deleted change has no
	// Object.
	ObjectChanges(realm string, since uint64) ([]ObjectChange, uint64, error)
}

// ObjectChange is an object event: an object's new state, or its delete.
type ObjectChange struct {
	Collection string  `json:"collection"`
	ID         string  `json:"id"`
	Deleted    bool    `json:"deleted,omitempty"`
	Object     *Object `json:"object,omitempty"`
}
