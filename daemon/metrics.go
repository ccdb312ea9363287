package daemon

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/realmsync/realmsync/crdt"
)

// metrics are the node's Prometheus metrics. Without a registerer in the
// config they are kept all the same, in a registry nobody reads.
type metrics struct {
	applied   *prometheus.CounterVec // by source: gossip, catch-up
	rejected  *prometheus.CounterVec // by reason
	published prometheus.Counter
	caughtUp  prometheus.Counter
	catchUp   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, n *Node) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "realmsync_ops_applied_total", Help: "Ops from peers applied, by how they came (gossip, catchup).",
		}, []string{"source"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "realmsync_ops_rejected_total", Help: "Ops from gossip refused, by reason.",
		}, []string{"reason"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "realmsync_ops_published_total", Help: "Ops this node wrote and published.",
		}),
		caughtUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "realmsync_catchup_ops_total", Help: "Ops that catch-up brought.",
		}),
		catchUp: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "realmsync_catchup_duration_seconds", Help: "How long catch-up rounds that brought ops took.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
	}
	reg.MustRegister(m.applied, m.rejected, m.published, m.caughtUp, m.catchUp,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "realmsync_peers", Help: "Peers connected.",
		}, func() float64 { return float64(n.Peers()) }),
		&realmCollector{n: n})
	return m
}

// rejectReason names why an op was refused, for the rejected metric.
func rejectReason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{crdt.ErrNotMember, "not_member"}, {crdt.ErrNotPermitted, "not_permitted"},
		{crdt.ErrBadSignature, "bad_signature"}, {crdt.ErrBrokenChain, "broken_chain"},
		{crdt.ErrWrongRealm, "wrong_realm"}, {crdt.ErrEquivocation, "equivocation"},
		{crdt.ErrMalformed, "malformed"}, {crdt.ErrTooLarge, "too_large"},
		{crdt.ErrClock, "clock"}, {crdt.ErrPendingFull, "queue_full"}, {errGroup, "malformed"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}

var (
	realmMembers  = prometheus.NewDesc("realmsync_realm_members", "Members of a realm.", []string{"realm"}, nil)
	realmMessages = prometheus.NewDesc("realmsync_realm_messages", "Chat messages in a realm.", []string{"realm"}, nil)
)

// realmCollector reports each realm's member and message counts when
// scraped.
type realmCollector struct{ n *Node }

func (c *realmCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- realmMembers
	ch <- realmMessages
}

func (c *realmCollector) Collect(ch chan<- prometheus.Metric) {
	for _, rp := range c.n.replicas() {
		rp.mu.Lock()
		members, messages := len(rp.r.Members()), rp.r.MessageCount()
		rp.mu.Unlock()
		label := rp.id.String()
		ch <- prometheus.MustNewConstMetric(realmMembers, prometheus.GaugeValue, float64(members), label)
		ch <- prometheus.MustNewConstMetric(realmMessages, prometheus.GaugeValue, float64(messages), label)
	}
}
