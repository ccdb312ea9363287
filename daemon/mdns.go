package daemon

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// mdnsServiceName is what realmsync nodes announce themselves as on the
// local network.
const mdnsServiceName = "_realmsync._udp"

// startMDNS announces the node on the local network and dials the members
// of its realms that it finds there.
func (n *Node) startMDNS() error {
	svc := mdns.NewMdnsService(n.host, mdnsServiceName, lanFinder{n})
	if err := svc.Start(); err != nil {
		return fmt.Errorf("mdns: %w", err)
	}
	n.mdns = svc
	return nil
}

// lanFinder dials realm members found on the local network; it only
// notes that other nodes exist, and never dials a stranger.
type lanFinder struct{ n *Node }

// HandlePeerFound dials a node found on the local network if it is a
// member of a realm held here.
func (f lanFinder) HandlePeerFound(ai peer.AddrInfo) {
	n := f.n
	if ai.ID == n.host.ID() || n.ctx.Err() != nil || !n.sharesRealm(ai.ID) {
		return
	}
	n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
	if n.host.Network().Connectedness(ai.ID) == network.Connected {
		return
	}
	n.log.Debug("member found on the local network", "peer", ai.ID)
	n.spawn(func() {
		ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
		defer cancel()
		if err := n.host.Connect(ctx, ai); err != nil {
			n.log.Debug("dial of a member on the local network failed", "peer", ai.ID, "err", err)
		}
	})
}
