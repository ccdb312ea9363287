package daemon

import (
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/connmgr"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/realmsync/realmsync/crdt"
	"github.com/realmsync/realmsync/daemon/store"
)

// defaultListen is where a node listens when Config.Listen is empty.
var defaultListen = []string{"/ip4/0.0.0.0/tcp/7701", "/ip4/0.0.0.0/udp/7701/quic-v1"}

// Defaults for the zero fields of Config.
const (
	DefaultSyncInterval = 5 * time.Second
	DefaultConnsLow     = 64
	DefaultConnsHigh    = 256
)

// Config configures a Node. DataDir is required; every other field has a
// working zero value.
type Config struct {
	// DataDir holds the node key, the datastore and the lock. Required.
	DataDir string

	// Listen lists the multiaddrs to listen on; port 0 picks a free port.
	// Empty means TCP and QUIC on port 7701 of every interface.
	Listen []string

	// Name is the display name other members see. Empty means "node".
	Name string

	// MDNS switches on discovery of other nodes on the local network.
	// Default false here; the daemon command turns it on unless told not to.
	MDNS bool

	// Relays lists circuit relays to use when this node is not reachable
	// directly, as multiaddrs ending in /p2p/<peer id>. Default none.
	Relays []string

	// SyncInterval is how often catch-up runs with each connected member.
	// Zero means DefaultSyncInterval (5 s).
	SyncInterval time.Duration

	// ConnsLow and ConnsHigh are the connection manager's watermarks: above
	// high it trims connections down to low, sparing realm members. Zero
	// means DefaultConnsLow (64) and DefaultConnsHigh (256).
	ConnsLow, ConnsHigh int

	// Store configures the datastore. The zero value is right for use.
	Store store.Options

	// Logger receives the node's logs. Nil means no logs.
	Logger *slog.Logger

	// Metrics receives the node's Prometheus metrics and libp2p's. Nil
	// means none are exported.
	Metrics prometheus.Registerer

	// Now returns the wall clock; nil means time.Now. Tests set it.
	Now func() time.Time

	// Seams for tests in this package: extra gossip options (a tracer),
	// and a connection gater (to cut the network apart).
	gossipOpts []pubsub.Option
	gater      connmgr.ConnectionGater
	onApplied  func(ops []*crdt.Op, ranged bool) // ops from peers, once applied; must not block
}

// validate returns one error per broken rule, joined.
func (c Config) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir: required"))
	}
	for _, a := range c.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			errs = append(errs, fmt.Errorf("listen address %q: %w", a, err))
		}
	}
	for _, a := range c.Relays {
		if _, err := ma.NewMultiaddr(a); err != nil {
			errs = append(errs, fmt.Errorf("relay address %q: %w", a, err))
		}
	}
	if c.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("sync interval %v: must not be negative", c.SyncInterval))
	}
	if c.ConnsLow < 0 || c.ConnsHigh < 0 || c.ConnsHigh != 0 && c.ConnsLow > c.ConnsHigh {
		errs = append(errs, fmt.Errorf("connection watermarks %d..%d: need 0 <= low <= high",
			c.ConnsLow, c.ConnsHigh))
	}
	return errors.Join(errs...)
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if len(c.Listen) == 0 {
		c.Listen = defaultListen
	}
	if c.Name == "" {
		c.Name = "node"
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.ConnsHigh == 0 {
		c.ConnsLow, c.ConnsHigh = max(c.ConnsLow, DefaultConnsLow), max(c.ConnsLow, DefaultConnsHigh)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
