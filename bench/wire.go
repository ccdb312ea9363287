package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/multiformats/go-multiaddr"
)

// Bytes on the wire are read from the kernel's counters of each TCP
// connection (ss -ti: bytes_sent and bytes_received, the TCP payload:
// what libp2p sent, its framing and encryption included, headers of IP
// and TCP not). Counting the connections of one peer's libp2p port
// leaves out the API traffic that the loopback interface's counters mix
// in.

// tcpPort returns the TCP port of the first TCP multiaddr in addrs.
func tcpPort(addrs []string) (int, error) {
	for _, a := range addrs {
		ma, err := multiaddr.NewMultiaddr(a)
		if err != nil {
			continue
		}
		if p, err := ma.ValueForProtocol(multiaddr.P_TCP); err == nil {
			return strconv.Atoi(p)
		}
	}
	return 0, fmt.Errorf("no TCP address in %v", addrs)
}

// p2pPort is the daemon's libp2p TCP port, from its status.
func (d *daemon) p2pPort() (int, error) {
	var st struct{ Addrs []string }
	if err := d.call("GET", "/v1/status", nil, &st); err != nil {
		return 0, err
	}
	return tcpPort(st.Addrs)
}

// tcpBytes sums what the established TCP connections whose local port is
// port have sent and received so far.
func tcpBytes(port int) (int64, error) {
	out, err := exec.Command("ss", "-tinH", "state", "established", fmt.Sprintf("( sport = :%d )", port)).Output()
	if err != nil {
		return 0, fmt.Errorf("ss: %w", err)
	}
	var n int64
	for _, field := range strings.Fields(string(out)) {
		for _, name := range []string{"bytes_sent:", "bytes_received:"} {
			if v, ok := strings.CutPrefix(field, name); ok {
				k, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("ss: %q: %w", field, err)
				}
				n += k
			}
		}
	}
	return n, nil
}

// wireMeter measures the bytes a peer's libp2p connections carry while
// something runs; where ss is missing it says so instead.
type wireMeter struct {
	port   int
	before int64
	err    error
}

func meterPort(port int, err error) *wireMeter {
	m := &wireMeter{port: port, err: err}
	if m.err == nil {
		m.before, m.err = tcpBytes(port)
	}
	return m
}

// perOp returns the bytes carried since the meter started, per op, as a
// table value, or why there is none.
func (m *wireMeter) perOp(ops int) (string, float64) {
	if m.err != nil {
		return "not measured: " + m.err.Error(), 0
	}
	now, err := tcpBytes(m.port)
	if err != nil {
		return "not measured: " + err.Error(), 0
	}
	per := float64(now-m.before) / float64(ops)
	return fmt.Sprintf("%.0f bytes per op", per), per
}

// addrPort is the TCP port of a peer process's address.
func addrPort(addr string) (int, error) { return tcpPort([]string{addr}) }
