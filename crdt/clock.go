package crdt

import (
	"bytes"
	"fmt"
	"time"
)

// Timestamp is a hybrid logical clock reading: milliseconds since the Unix
// epoch in the high 48 bits and a logical counter in the low 16. It orders
// events like wall time where clocks agree and still respects causality
// where they do not.
type Timestamp uint64

const logicalBits = 16

// MakeTimestamp builds a timestamp from wall milliseconds and a counter.
func MakeTimestamp(wallMs int64, logical uint16) Timestamp {
	return Timestamp(uint64(wallMs)<<logicalBits | uint64(logical))
}

// WallMs returns the wall-clock part in milliseconds since the Unix epoch.
func (t Timestamp) WallMs() int64 { return int64(t >> logicalBits) }

// Time returns the wall-clock part as a time.Time.
func (t Timestamp) Time() time.Time { return time.UnixMilli(t.WallMs()).UTC() }

// String formats t as wall-ms.counter, for tests and logs.
func (t Timestamp) String() string {
	return fmt.Sprintf("%d.%d", t.WallMs(), uint16(t))
}

// Clock is a hybrid logical clock. It holds no reference to real time:
// callers pass the wall clock in, which keeps the engine deterministic.
type Clock struct {
	last Timestamp
}

// Now returns a timestamp greater than every timestamp this clock issued or
// observed, and not less than wallMs.
func (c *Clock) Now(wallMs int64) Timestamp {
	t := MakeTimestamp(wallMs, 0)
	if t <= c.last {
		t = c.last + 1
	}
	c.last = t
	return t
}

// Observe moves the clock past t, so the next local event sorts after it.
func (c *Clock) Observe(t Timestamp) {
	if t > c.last {
		c.last = t
	}
}

// Last returns the greatest timestamp issued or observed.
func (c *Clock) Last() Timestamp { return c.last }

// Stamp is an op's position in realm order: (clock, author, seq). Every
// replica sorts ops the same way by it, since an author's clock strictly
// increases along its chain and so no two ops share a stamp.
type Stamp struct {
	Clock  Timestamp
	Author PublicKey
	Seq    uint64
}

// Less orders stamps: by clock, then author, then seq.
func (s Stamp) Less(o Stamp) bool { return s.Compare(o) < 0 }

// Compare returns -1, 0 or +1 as s sorts before, equal to or after o.
func (s Stamp) Compare(o Stamp) int {
	switch {
	case s.Clock < o.Clock:
		return -1
	case s.Clock > o.Clock:
		return 1
	}
	if c := bytes.Compare(s.Author[:], o.Author[:]); c != 0 {
		return c
	}
	switch {
	case s.Seq < o.Seq:
		return -1
	case s.Seq > o.Seq:
		return 1
	}
	return 0
}

// IsZero reports whether s is the zero stamp, which sorts before all others.
func (s Stamp) IsZero() bool { return s == Stamp{} }
