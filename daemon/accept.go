package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/realmsync/realmsync/crdt"
	"github.com/realmsync/realmsync/invite"
)

// acceptTimeout bounds one acceptance exchange, from dialing to the
// answer.
const acceptTimeout = 15 * time.Second

// Addresses an offer names: this node's, then other admin nodes'.
const (
	offerOwnAddrs   = 4
	offerOtherAddrs = 2
)

// CreateOffer issues an offer of the realm for role, valid for expiresIn
// and maxUses acceptances. Only an admin issues offers. The offer names
// this node and up to three other admin nodes whose addresses are known
// here, so that it can be honoured while this node is offline.
func (n *Node) CreateOffer(id crdt.RealmID, role crdt.Role, expiresIn time.Duration, maxUses uint16) (*invite.Offer, error) {
	if role < crdt.RoleReader || role > crdt.RoleAdmin {
		return nil, fmt.Errorf("create offer: role %s: %w", role, crdt.ErrBadRole)
	}
	if expiresIn < time.Second || maxUses == 0 {
		return nil, fmt.Errorf("create offer: it must last a second at least and have a use")
	}
	rp, err := n.replica(id)
	if err != nil {
		return nil, err
	}
	rp.mu.Lock()
	mine := rp.r.Role(n.self)
	meta := rp.r.Meta()
	var admins []crdt.PublicKey
	for _, m := range rp.r.Members() {
		if m.Role == crdt.RoleAdmin && m.Key != n.self {
			admins = append(admins, m.Key)
		}
	}
	rp.mu.Unlock()
	if mine != crdt.RoleAdmin {
		return nil, fmt.Errorf("create offer: this node is a %s of the realm: %w", mine, invite.ErrNotPermitted)
	}

	now := n.cfg.Now().Truncate(time.Second)
	o := &invite.Offer{
		Realm: id, RealmName: meta.Name, Role: role, Issuer: n.self,
		IssuedAt: now, ExpiresAt: now.Add(expiresIn.Round(time.Second)), MaxUses: maxUses,
	}
	if _, err := rand.Read(o.ID[:]); err != nil {
		return nil, err
	}
	o.Nodes = append(o.Nodes, invite.Node{Key: n.self, Addrs: dialable(n.host.Addrs(), offerOwnAddrs)})
	for _, k := range admins {
		if len(o.Nodes) == invite.MaxNodes {
			break
		}
		pid, err := peerOf(k)
		if err != nil {
			continue
		}
		if addrs := dialable(n.host.Peerstore().Addrs(pid), offerOtherAddrs); len(addrs) > 0 {
			o.Nodes = append(o.Nodes, invite.Node{Key: k, Addrs: addrs})
		}
	}
	if len(o.Nodes[0].Addrs) == 0 {
		return nil, errors.New("create offer: this node has no address to offer")
	}
	if err := o.Sign(n.priv); err != nil {
		return nil, err
	}
	b := crdt.NewBatch()
	b.Put(offerKey(id, o.ID), o.Marshal())
	if err := n.st.Commit(n.ctx, b); err != nil {
		return nil, n.storeFailed(err)
	}
	n.log.Info("offer created", "realm", id, "offer", o.ID, "role", role, "uses", maxUses,
		"expires", o.ExpiresAt)
	return o, nil
}

// offersPrefix keeps the offers this node issued, by realm:
// "offers/<realm>/<offer id>" holds the binary offer. Only the issuing
// node keeps an offer's token; the realm's log counts its uses and
// revocation, which every replica sees.
const offersPrefix = "offers/"

func offerKey(realm crdt.RealmID, id crdt.OfferID) string {
	return offersPrefix + realm.String() + "/" + id.String()
}

// OfferState is an offer this node issued, with what the realm's log
// says of it.
type OfferState struct {
	Offer   *invite.Offer
	Uses    int
	Revoked bool
}

// Offers lists the offers of the realm that this node issued, oldest
// first.
func (n *Node) Offers(id crdt.RealmID) ([]OfferState, error) {
	rp, err := n.replica(id)
	if err != nil {
		return nil, err
	}
	var out []OfferState
	var derr error
	err = n.st.Scan(offersPrefix+id.String()+"/", "", func(_ string, raw []byte) bool {
		o, err := invite.Unmarshal(raw)
		if err != nil {
			derr = fmt.Errorf("stored offer: %w", err)
			return false
		}
		out = append(out, OfferState{Offer: o})
		return true
	})
	if err = errors.Join(err, derr); err != nil {
		return nil, fmt.Errorf("list offers: %w", err)
	}
	rp.mu.Lock()
	for i := range out {
		out[i].Uses, out[i].Revoked = rp.r.Offer(out[i].Offer.ID)
	}
	rp.mu.Unlock()
	slices.SortStableFunc(out, func(x, y OfferState) int { return x.Offer.IssuedAt.Compare(y.Offer.IssuedAt) })
	return out, nil
}

// RevokeOffer stops an offer of the realm from admitting anyone else, on
// every replica. Members it admitted stay.
func (n *Node) RevokeOffer(ctx context.Context, id crdt.RealmID, offer crdt.OfferID) error {
	if _, err := n.Write(ctx, id, &crdt.RevokeOffer{Offer: offer}); err != nil {
		return fmt.Errorf("revoke offer %s: %w", offer, err)
	}
	n.log.Info("offer revoked", "realm", id, "offer", offer)
	return nil
}

// dialable picks up to max addresses worth offering: public ones first,
// then private ones, loopback last; no unspecified address, no duplicate,
// none too long for an offer.
func dialable(addrs []ma.Multiaddr, max int) []ma.Multiaddr {
	rank := func(a ma.Multiaddr) int {
		switch {
		case manet.IsPublicAddr(a):
			return 0
		case manet.IsIPLoopback(a):
			return 2
		}
		return 1
	}
	var out []ma.Multiaddr
	for _, a := range addrs {
		if len(a.Bytes()) > invite.MaxAddrSize || manet.IsIPUnspecified(a) {
			continue
		}
		if !slices.ContainsFunc(out, a.Equal) {
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(x, y ma.Multiaddr) int { return rank(x) - rank(y) })
	return out[:min(len(out), max)]
}

// serveAccept honours an offer that a peer presents.
func (n *Node) serveAccept(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(acceptTimeout))
	from := s.Conn().RemotePeer()
	raw, err := io.ReadAll(io.LimitReader(s, invite.MaxRequestSize+1))
	if err != nil {
		s.Reset()
		return
	}
	resp := n.honour(from, raw)
	if resp.Code != "" {
		n.log.Info("offer refused", "peer", from, "code", resp.Code, "detail", resp.Detail)
	}
	s.Write(resp.Marshal())
}

// honour checks an acceptance request against the realm's log and, when
// the offer holds, grants its role to the peer that presented it.
func (n *Node) honour(from peer.ID, raw []byte) *invite.Response {
	refuse := func(err error) *invite.Response {
		code := invite.Code(err)
		if code == "" {
			code = invite.Code(invite.ErrUnreachable)
		}
		return &invite.Response{Code: code, Detail: err.Error()}
	}
	key, ok := authorOf(from)
	if !ok {
		return refuse(fmt.Errorf("%w: the peer has no ed25519 key", invite.ErrInvalidToken))
	}
	req, err := invite.UnmarshalRequest(raw)
	if err != nil {
		return refuse(err)
	}
	o, err := invite.Unmarshal(req.Offer)
	if err == nil {
		err = o.Verify()
	}
	if err != nil {
		return refuse(err)
	}
	rp, err := n.replica(o.Realm)
	if err != nil {
		return refuse(fmt.Errorf("%w: this node does not hold the realm", invite.ErrUnreachable))
	}
	now := n.cfg.Now()
	grant := &crdt.Grant{Member: key, Role: o.Role, FromSeq: req.Head + 1, Name: req.Name, Offer: o.ID}
	var meta crdt.Meta
	role := o.Role
	_, err = rp.writeIf(n.ctx, func(r *crdt.Realm) error {
		meta = r.Meta()
		if err := offerHolds(r, o, n.self, now); err != nil {
			return err
		}
		if held := r.Role(key); held != crdt.RoleNone {
			// Admitted already: the invitee presents an offer to every node
			// it names at once, and another of them honoured it (the grant
			// is here by gossip), or an earlier answer was lost on the way.
			// It gets the answer it would have had, and no second grant.
			role = held
			return errAdmitted
		}
		if uses, _ := r.Offer(o.ID); uses >= int(o.MaxUses) {
			return fmt.Errorf("%w: used %d of %d times", invite.ErrUsedUp, uses, o.MaxUses)
		}
		return nil
	}, grant)
	if err != nil && !errors.Is(err, errAdmitted) {
		return refuse(err)
	}
	n.log.Info("offer accepted", "realm", o.Realm, "peer", from, "offer", o.ID, "role", role,
		"again", err != nil)
	return &invite.Response{Realm: o.Realm, RealmName: meta.Name, Role: role, Keys: rp.ring.all()}
}

// errAdmitted stops the grant of an offer to a peer that is a member.
var errAdmitted = errors.New("admitted already")

// offerHolds checks the offer itself against the realm's log, as the
// node self that would honour it, at now: whether self may honour it,
// and whether it is in date, not revoked, and within what its issuer
// may grant. Uses and the invitee's membership are for the caller.
func offerHolds(r *crdt.Realm, o *invite.Offer, self crdt.PublicKey, now time.Time) error {
	_, revoked := r.Offer(o.ID)
	issuer := r.Role(o.Issuer)
	switch {
	case r.Role(self) != crdt.RoleAdmin:
		return fmt.Errorf("%w: this node is not an admin of the realm", invite.ErrUnreachable)
	case !now.Before(o.ExpiresAt):
		return fmt.Errorf("%w: at %s", invite.ErrExpired, o.ExpiresAt.UTC().Format(time.RFC3339))
	case revoked:
		return invite.ErrRevoked
	case issuer != crdt.RoleAdmin:
		return fmt.Errorf("%w: the issuer is a %s, not an admin", invite.ErrNotPermitted, issuer)
	case o.Role > issuer:
		return fmt.Errorf("%w: %s offered by a %s", invite.ErrNotPermitted, o.Role, issuer)
	}
	return nil
}

// Accept presents an offer to the nodes it names, all at once, and
// starts holding the realm once one of them admits this node. It returns
// a *invite.RefusedError when a node refuses, and an
// *invite.UnreachableError when none answers.
func (n *Node) Accept(ctx context.Context, o *invite.Offer) (crdt.RealmID, error) {
	if err := o.Verify(); err != nil {
		return crdt.RealmID{}, err
	}
	if !n.cfg.Now().Before(o.ExpiresAt) {
		return crdt.RealmID{}, fmt.Errorf("%w: at %s", invite.ErrExpired, o.ExpiresAt.UTC().Format(time.RFC3339))
	}
	var head uint64
	if rp, err := n.replica(o.Realm); err == nil {
		rp.mu.Lock()
		role := rp.r.Role(n.self)
		head, _ = rp.r.Head(n.self)
		rp.mu.Unlock()
		if role != crdt.RoleNone {
			return o.Realm, invite.ErrAlreadyMember
		}
	}
	req := (&invite.Request{Offer: o.Marshal(), Name: n.cfg.Name, Head: head}).Marshal()

	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, acceptTimeout)
	type answer struct {
		resp  *invite.Response
		tried []invite.AddrError
	}
	answers := make(chan answer, len(o.Nodes))
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // the other attempts end with ctx
	for _, node := range o.Nodes {
		if node.Key == n.self {
			continue
		}
		wg.Go(func() {
			resp, tried := n.present(ctx, node, req)
			answers <- answer{resp, tried}
		})
	}
	go func() { wg.Wait(); close(answers) }()

	unreachable := &invite.UnreachableError{}
	for a := range answers {
		switch {
		case a.resp == nil || a.resp.Code == invite.Code(invite.ErrUnreachable):
			unreachable.Tried = append(unreachable.Tried, a.tried...)
			continue
		case a.resp.Code != "":
			return crdt.RealmID{}, &invite.RefusedError{Code: a.resp.Code, Detail: a.resp.Detail}
		}
		cancel()
		if err := n.JoinRealm(o.Realm, a.resp.Keys); err != nil {
			return crdt.RealmID{}, err
		}
		n.log.Info("joined realm", "realm", o.Realm, "role", a.resp.Role)
		n.awaitAdmitted(caller, o.Realm)
		return o.Realm, nil
	}
	return crdt.RealmID{}, unreachable
}

// admittedWait is how long Accept waits, at most, for the ops that admit
// this node to arrive by catch-up from the node that honoured the offer.
const admittedWait = 5 * time.Second

// awaitAdmitted waits, up to admittedWait or until ctx ends, until the realm's ops that
// admit this node are here: the realm's start and this node's grant, so
// that a write right after Accept is allowed. Past that, the realm is
// joined all the same, and catch-up brings them later.
func (n *Node) awaitAdmitted(ctx context.Context, id crdt.RealmID) {
	rp, err := n.replica(id)
	if err != nil {
		return
	}
	timeout := time.NewTimer(admittedWait)
	defer timeout.Stop()
	for {
		changed := rp.changed()
		rp.mu.Lock()
		in := rp.r.Role(n.self) != crdt.RoleNone
		rp.mu.Unlock()
		if in {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			n.log.Info("joined realm before its ops arrived", "realm", id)
			return
		case <-ctx.Done():
			return
		case <-n.ctx.Done():
			return
		}
	}
}

// present dials one node of an offer and presents the request. It
// returns the node's answer, or nil and what went wrong at each address.
func (n *Node) present(ctx context.Context, node invite.Node, req []byte) (*invite.Response, []invite.AddrError) {
	id, err := peerOf(node.Key)
	fail := func(addr string, err error) (*invite.Response, []invite.AddrError) {
		return nil, []invite.AddrError{{Addr: addr, Err: err.Error()}}
	}
	if err != nil {
		return fail("(bad key)", err)
	}
	var tried []invite.AddrError
	if err := n.host.Connect(ctx, peer.AddrInfo{ID: id, Addrs: node.Addrs}); err != nil {
		for _, a := range node.Addrs {
			tried = append(tried, invite.AddrError{Addr: a.String(), Err: err.Error()})
		}
		return nil, tried
	}
	s, err := n.host.NewStream(ctx, id, protocol.ID(invite.AcceptProtocol))
	if err != nil {
		return fail(id.String(), err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(acceptTimeout))
	if _, err := s.Write(req); err != nil {
		return fail(id.String(), err)
	}
	s.CloseWrite()
	raw, err := io.ReadAll(io.LimitReader(s, invite.MaxResponseSize+1))
	if err != nil {
		return fail(id.String(), err)
	}
	resp, err := invite.UnmarshalResponse(raw)
	if err != nil {
		return fail(id.String(), err)
	}
	return resp, nil
}
