package api

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/realmsync/realmsync/crdt"
	"github.com/realmsync/realmsync/daemon"
	"github.com/realmsync/realmsync/invite"
)

// QRSize is the width and height of an invite's QR code PNG, in pixels.
const QRSize = 512

// NodeBackend is the Backend of a running node.
type NodeBackend struct {
	n       *daemon.Node
	version string
}

var _ Backend = (*NodeBackend)(nil)

// NewNodeBackend returns the Backend of n; version is what status reports.
func NewNodeBackend(n *daemon.Node, version string) *NodeBackend {
	return &NodeBackend{n: n, version: version}
}

// Status describes the node.
func (nb *NodeBackend) Status() Status {
	addrs := []string{}
	for _, a := range nb.n.Addrs() {
		addrs = append(addrs, a.String())
	}
	return Status{
		PeerID: nb.n.ID().String(), Name: nb.n.Name(), Addrs: addrs,
		Version: nb.version, Realms: len(nb.n.Realms()), Peers: nb.n.Peers(),
	}
}

// Realms lists the realms held, by name.
func (nb *NodeBackend) Realms() ([]Realm, error) {
	var out []Realm
	for _, id := range nb.n.Realms() {
		r, err := nb.realm(id)
		if errors.Is(err, daemon.ErrNoRealm) {
			continue // left meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Realm) int {
		return cmpStrings(a.Name+"\x00"+a.ID, b.Name+"\x00"+b.ID)
	})
	return out, nil
}

func cmpStrings(a, b string) int { return strings.Compare(a, b) }

// CreateRealm creates a realm with this node as its admin.
func (nb *NodeBackend) CreateRealm(ctx context.Context, name string) (Realm, error) {
	id, err := nb.n.CreateRealm(ctx, name)
	if err != nil {
		return Realm{}, nodeError(err)
	}
	return nb.realm(id)
}

// Realm describes one realm.
func (nb *NodeBackend) Realm(realm string) (Realm, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return Realm{}, err
	}
	return nb.realm(id)
}

func (nb *NodeBackend) realm(id crdt.RealmID) (Realm, error) {
	out := Realm{ID: id.String()}
	err := nb.n.View(id, func(r *crdt.Realm) error {
		if !r.HasGenesis() {
			return nil // admitted; the realm itself is on its way
		}
		meta := r.Meta()
		out.Name = meta.Name
		out.CreatedAt = wallTime(meta.Created)
		out.Members = len(r.Members())
		out.Messages = r.MessageCount()
		if role := r.Role(nb.n.Author()); role != crdt.RoleNone {
			out.Role = role.String()
		}
		return nil
	})
	return out, nodeError(err)
}

// resolve finds a realm by id or by a name only one realm here has.
func (nb *NodeBackend) resolve(realm string) (crdt.RealmID, error) {
	if id, err := crdt.ParseHash(realm); err == nil {
		if slices.Contains(nb.n.Realms(), id) {
			return id, nil
		}
		return id, Errorf(http.StatusNotFound, CodeNotFound, "no realm %s here", realm)
	}
	var found []crdt.RealmID
	for _, id := range nb.n.Realms() {
		nb.n.View(id, func(r *crdt.Realm) error {
			if r.HasGenesis() && r.Meta().Name == realm {
				found = append(found, id)
			}
			return nil
		})
	}
	switch len(found) {
	case 0:
		return crdt.RealmID{}, Errorf(http.StatusNotFound, CodeNotFound, "no realm named %q here", realm)
	case 1:
		return found[0], nil
	}
	return crdt.RealmID{}, Errorf(http.StatusConflict, "ambiguous_realm",
		"%d realms are named %q: name one by its id", len(found), realm)
}

// Members lists a realm's members.
func (nb *NodeBackend) Members(realm string) ([]Member, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return nil, err
	}
	var out []Member
	err = nb.n.View(id, func(r *crdt.Realm) error {
		for _, m := range r.Members() {
			out = append(out, nb.member(m))
		}
		return nil
	})
	return out, nodeError(err)
}

func (nb *NodeBackend) member(m crdt.Member) Member {
	pid, _ := daemon.PeerID(m.Key)
	return Member{PeerID: pid.String(), Name: m.Name, Role: m.Role.String(), Online: nb.n.Online(m.Key)}
}

// SetRole changes a member's role.
func (nb *NodeBackend) SetRole(ctx context.Context, realm, who, role string) (Member, error) {
	id, key, err := nb.resolveMember(realm, who)
	if err != nil {
		return Member{}, err
	}
	rl, err := crdt.ParseRole(role)
	if err != nil {
		return Member{}, Errorf(http.StatusBadRequest, CodeBadRequest, "%v", err)
	}
	if err := nb.n.SetRole(ctx, id, key, rl); err != nil {
		return Member{}, nodeError(err)
	}
	var out Member
	err = nb.n.View(id, func(r *crdt.Realm) error {
		for _, m := range r.Members() {
			if m.Key == key {
				out = nb.member(m)
			}
		}
		return nil
	})
	return out, nodeError(err)
}

// RemoveMember revokes a member.
func (nb *NodeBackend) RemoveMember(ctx context.Context, realm, who string) error {
	id, key, err := nb.resolveMember(realm, who)
	if err != nil {
		return err
	}
	return nodeError(nb.n.RemoveMember(ctx, id, key))
}

// resolveMember finds a realm and a member of it by peer id.
func (nb *NodeBackend) resolveMember(realm, who string) (crdt.RealmID, crdt.PublicKey, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return id, crdt.PublicKey{}, err
	}
	pid, err := peer.Decode(who)
	if err != nil {
		return id, crdt.PublicKey{}, Errorf(http.StatusBadRequest, CodeBadRequest, "%q is not a peer id", who)
	}
	key, ok := daemon.MemberKey(pid)
	if !ok {
		return id, crdt.PublicKey{}, Errorf(http.StatusBadRequest, CodeBadRequest, "%s is not the peer id of a realmsync node", who)
	}
	member := false
	nb.n.View(id, func(r *crdt.Realm) error {
		member = r.Role(key) != crdt.RoleNone
		return nil
	})
	if !member {
		return id, key, Errorf(http.StatusNotFound, CodeNotFound, "%s is not a member of the realm", who)
	}
	return id, key, nil
}

// Send writes a chat message. Its id is left to the engine, which names
// it after the op (crdt.MessageID).
func (nb *NodeBackend) Send(ctx context.Context, realm, text string) (Message, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return Message{}, err
	}
	value, _ := json.Marshal(text)
	op, err := nb.n.Write(ctx, id, &crdt.Set{Collection: crdt.MessagesCollection,
		Fields: []crdt.Field{{Name: "text", Value: value}}})
	if err != nil {
		return Message{}, nodeError(err)
	}
	return Message{ID: crdt.MessageID(op.Author, op.Seq), Author: nb.n.ID().String(), AuthorName: nb.n.Name(),
		Text: text, SentAt: wallTime(op.Clock)}, nil
}

// Messages lists messages in the realm's order.
func (nb *NodeBackend) Messages(realm, after string, limit int) ([]Message, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return nil, err
	}
	var out []Message
	err = nb.n.View(id, func(r *crdt.Realm) error {
		objs, err := r.Messages(after, limit)
		if err != nil {
			return err
		}
		out = messages(r, objs)
		return nil
	})
	return out, nodeError(err)
}

// Arrived lists messages in the order they became visible here.
func (nb *NodeBackend) Arrived(realm string, since uint64, limit int) ([]Message, uint64, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return nil, 0, err
	}
	var out []Message
	last := since
	err = nb.n.View(id, func(r *crdt.Realm) error {
		if since == math.MaxUint64 {
			last = r.ArrivalHead()
			return nil
		}
		ids, end, err := r.Arrivals(since, limit)
		if err != nil {
			return err
		}
		last = end
		objs := make([]*crdt.Object, 0, len(ids))
		for _, mid := range ids {
			o, err := r.Object(crdt.ObjectKey{Collection: crdt.MessagesCollection, ID: mid})
			if errors.Is(err, crdt.ErrNotFound) {
				continue // it came and went
			}
			if err != nil {
				return err
			}
			objs = append(objs, o)
		}
		out = messages(r, objs)
		return nil
	})
	return out, last, nodeError(err)
}

// messages turns message objects into API messages.
func messages(r *crdt.Realm, objs []*crdt.Object) []Message {
	names := make(map[crdt.PublicKey]string)
	for _, m := range r.Members() {
		names[m.Key] = m.Name
	}
	out := make([]Message, 0, len(objs))
	for _, o := range objs {
		pid, _ := daemon.PeerID(o.Created.Author)
		m := Message{ID: o.Key.ID, Author: pid.String(), AuthorName: names[o.Created.Author], SentAt: wallTime(o.Created.Clock)}
		if v, ok := o.Field("text"); ok {
			if json.Unmarshal(v, &m.Text) != nil {
				m.Text = string(v)
			}
		}
		out = append(out, m)
	}
	return out
}

// PutObject sets fields of an object.
func (nb *NodeBackend) PutObject(ctx context.Context, realm, collection, objID string, fields map[string]json.RawMessage) (Object, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return Object{}, err
	}
	set := &crdt.Set{Collection: collection, ID: objID}
	for name, v := range fields {
		set.Fields = append(set.Fields, crdt.Field{Name: name, Value: compactJSON(v)})
	}
	slices.SortFunc(set.Fields, func(a, b crdt.Field) int { return strings.Compare(a.Name, b.Name) })
	if _, err := nb.n.Write(ctx, id, set); err != nil {
		return Object{}, nodeError(err)
	}
	return nb.object(id, collection, objID)
}

func compactJSON(v json.RawMessage) []byte {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return v
	}
	return b.Bytes()
}

// Object reads one object.
func (nb *NodeBackend) Object(realm, collection, objID string) (Object, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return Object{}, err
	}
	return nb.object(id, collection, objID)
}

func (nb *NodeBackend) object(id crdt.RealmID, collection, objID string) (Object, error) {
	var out Object
	err := nb.n.View(id, func(r *crdt.Realm) error {
		o, err := r.Object(crdt.ObjectKey{Collection: collection, ID: objID})
		if err != nil {
			return err
		}
		out = objectOf(o)
		return nil
	})
	return out, nodeError(err)
}

func objectOf(o *crdt.Object) Object {
	out := Object{ID: o.Key.ID, Fields: make(map[string]json.RawMessage), UpdatedAt: wallTime(o.Updated.Clock)}
	for _, f := range o.Fields {
		v, _ := o.Field(f.Name)
		if !json.Valid(v) {
			v, _ = json.Marshal(string(v)) // written by something else than the API
		}
		out.Fields[f.Name] = v
	}
	return out
}

// DeleteObject deletes an object.
func (nb *NodeBackend) DeleteObject(ctx context.Context, realm, collection, objID string) error {
	id, err := nb.resolve(realm)
	if err != nil {
		return err
	}
	if _, err := nb.object(id, collection, objID); err != nil {
		return err
	}
	_, err = nb.n.Write(ctx, id, &crdt.Delete{Collection: collection, ID: objID})
	return nodeError(err)
}

// Objects lists the objects of a collection.
func (nb *NodeBackend) Objects(realm, collection string) ([]Object, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return nil, err
	}
	var out []Object
	err = nb.n.View(id, func(r *crdt.Realm) error {
		objs, err := r.Objects(collection, "", MaxMessages)
		for _, o := range objs {
			out = append(out, objectOf(o))
		}
		return err
	})
	return out, nodeError(err)
}

// CreateInvite issues an offer.
func (nb *NodeBackend) CreateInvite(ctx context.Context, realm, role string, expiresIn time.Duration, maxUses int) (Invite, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return Invite{}, err
	}
	rl, err := crdt.ParseRole(role)
	if err != nil {
		return Invite{}, Errorf(http.StatusBadRequest, CodeBadRequest, "%v", err)
	}
	o, err := nb.n.CreateOffer(id, rl, expiresIn, uint16(maxUses))
	if err != nil {
		return Invite{}, nodeError(err)
	}
	inv := inviteOf(daemon.OfferState{Offer: o})
	inv.Token = o.Text()
	return inv, nil
}

func inviteOf(s daemon.OfferState) Invite {
	return Invite{
		OfferID: hex.EncodeToString(s.Offer.ID[:]), Role: s.Offer.Role.String(),
		ExpiresAt: s.Offer.ExpiresAt, MaxUses: int(s.Offer.MaxUses), Uses: s.Uses, Revoked: s.Revoked,
	}
}

// Invites lists the offers this node issued for a realm.
func (nb *NodeBackend) Invites(realm string) ([]Invite, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return nil, err
	}
	offers, err := nb.n.Offers(id)
	if err != nil {
		return nil, nodeError(err)
	}
	var out []Invite
	for _, s := range offers {
		out = append(out, inviteOf(s))
	}
	return out, nil
}

// RevokeInvite revokes an offer.
func (nb *NodeBackend) RevokeInvite(ctx context.Context, realm, offer string) error {
	id, s, err := nb.offer(realm, offer)
	if err != nil {
		return err
	}
	return nodeError(nb.n.RevokeOffer(ctx, id, s.Offer.ID))
}

// InviteQR draws an offer's QR code.
func (nb *NodeBackend) InviteQR(realm, offer string) ([]byte, error) {
	_, s, err := nb.offer(realm, offer)
	if err != nil {
		return nil, err
	}
	return s.Offer.QRPNG(QRSize)
}

// offer finds an offer this node issued.
func (nb *NodeBackend) offer(realm, offer string) (crdt.RealmID, daemon.OfferState, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return id, daemon.OfferState{}, err
	}
	offers, err := nb.n.Offers(id)
	if err != nil {
		return id, daemon.OfferState{}, nodeError(err)
	}
	for _, s := range offers {
		if hex.EncodeToString(s.Offer.ID[:]) == strings.ToLower(offer) {
			return id, s, nil
		}
	}
	return id, daemon.OfferState{}, Errorf(http.StatusNotFound, CodeNotFound, "no invite %s issued here for this realm", offer)
}

// Accept presents an offer given as text.
func (nb *NodeBackend) Accept(ctx context.Context, token string) (Realm, error) {
	o, err := invite.Parse(token)
	if err != nil {
		return Realm{}, offerError(err)
	}
	id, err := nb.n.Accept(ctx, o)
	if err != nil {
		return Realm{}, offerError(err)
	}
	return nb.realm(id)
}

// AcceptImage presents an offer given as the image of its QR code.
func (nb *NodeBackend) AcceptImage(ctx context.Context, img []byte) (Realm, error) {
	text, err := invite.DecodeImage(bytes.NewReader(img))
	if err != nil {
		return Realm{}, Errorf(http.StatusBadRequest, "no_qr_code", "%v", err)
	}
	return nb.Accept(ctx, text)
}

// Changed returns a channel closed at the realm's next change.
func (nb *NodeBackend) Changed(realm string) (<-chan struct{}, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return nil, err
	}
	ch, err := nb.n.Changed(id)
	return ch, nodeError(err)
}

// ObjectChanges reports the objects changed since the change numbered
// since; when the node forgot those, it reports none and the number to go
// on from.
func (nb *NodeBackend) ObjectChanges(realm string, since uint64) ([]ObjectChange, uint64, error) {
	id, err := nb.resolve(realm)
	if err != nil {
		return nil, 0, err
	}
	keys, next, err := nb.n.ObjectChanges(id, since)
	if errors.Is(err, daemon.ErrChangesLost) {
		return nil, next, nil
	}
	if err != nil {
		return nil, 0, nodeError(err)
	}
	var out []ObjectChange
	for _, k := range keys {
		c := ObjectChange{Collection: k.Collection, ID: k.ID}
		o, err := nb.object(id, k.Collection, k.ID)
		var e *Error
		switch {
		case err == nil:
			c.Object = &o
		case errors.As(err, &e) && e.Status == http.StatusNotFound:
			c.Deleted = true
		default:
			return nil, 0, err
		}
		out = append(out, c)
	}
	return out, next, nil
}

// offerStatus is the HTTP status of each refused-offer code.
var offerStatus = map[string]int{
	"invalid_token":  http.StatusBadRequest,
	"bad_signature":  http.StatusBadRequest,
	"expired":        http.StatusGone,
	"used_up":        http.StatusGone,
	"revoked":        http.StatusGone,
	"not_permitted":  http.StatusForbidden,
	"already_member": http.StatusConflict,
	"unreachable":    http.StatusBadGateway,
}

// offerError reports a refused offer with its code.
func offerError(err error) error {
	if code := invite.Code(err); code != "" {
		status, ok := offerStatus[code]
		if !ok {
			status = http.StatusBadRequest
		}
		return &Error{Status: status, Code: code, Detail: err.Error()}
	}
	return nodeError(err)
}

// nodeError reports the node's and the engine's refusals with a status;
// anything else stays an internal error.
func nodeError(err error) error {
	var e *Error
	switch {
	case err == nil, errors.As(err, &e):
		return err
	case errors.Is(err, daemon.ErrNoRealm):
		return Errorf(http.StatusNotFound, CodeNotFound, "%v", err)
	case errors.Is(err, crdt.ErrNotFound):
		return Errorf(http.StatusNotFound, CodeNotFound, "%v", err)
	case errors.Is(err, crdt.ErrNotPermitted), errors.Is(err, crdt.ErrNotMember), errors.Is(err, invite.ErrNotPermitted):
		return Errorf(http.StatusForbidden, "not_permitted", "%v", err)
	case errors.Is(err, crdt.ErrMalformed), errors.Is(err, crdt.ErrTooLarge), errors.Is(err, crdt.ErrBadRole):
		return Errorf(http.StatusBadRequest, CodeBadRequest, "%v", err)
	}
	return err
}

// wallTime is the wall-clock part of a timestamp.
func wallTime(ts crdt.Timestamp) time.Time { return time.UnixMilli(ts.WallMs()).UTC() }
