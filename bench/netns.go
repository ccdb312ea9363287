package main

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// A split is the network of the partition row: a namespace per node,
// each with its own address (as separate machines have: libp2p allows
// a peer at most 8 connections from one IPv4 address), joined by veth
// pairs to one of two bridges in a hub namespace, the first half of the
// nodes to one bridge and the rest to the other, and the bridges joined
// by one more veth pair. Taking that link down cuts every connection
// between the halves at once, as a real partition does (established
// connections stall, new dials fail), and bringing it up heals it.
// Making namespaces takes root and iproute2's ip; where either is
// missing, newSplit says why and the partition row is skipped.
type split struct {
	hub  string
	ns   []string // a node's namespace
	ip   []string // and its address
	link string   // the hub's end of the link between the bridges
}

// place is where a process runs: a namespace ("" for the bench's own)
// and the address it listens on.
type place struct{ ns, ip string }

var onLoopback = place{ip: "127.0.0.1"}

// newSplit makes the network for n nodes.
func newSplit(n int) (*split, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root to make network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("needs iproute2's ip to make network namespaces")
	}
	id := os.Getpid() % 100000
	s := &split{hub: fmt.Sprintf("rsb-hub%d", id), link: "cut0"}
	steps := [][]string{
		{"netns", "add", s.hub},
		{"-n", s.hub, "link", "add", "br0", "type", "bridge"},
		{"-n", s.hub, "link", "add", "br1", "type", "bridge"},
		{"-n", s.hub, "link", "add", "cut0", "type", "veth", "peer", "name", "cut1"},
		{"-n", s.hub, "link", "set", "cut0", "master", "br0"},
		{"-n", s.hub, "link", "set", "cut1", "master", "br1"},
	}
	for _, dev := range []string{"br0", "br1", "cut0", "cut1"} {
		steps = append(steps, []string{"-n", s.hub, "link", "set", dev, "up"})
	}
	for i := range n {
		ns, dev, port := fmt.Sprintf("rsb-n%d-%d", i, id), fmt.Sprintf("rsb%d-%d", i, id), fmt.Sprintf("p%d", i)
		s.ns, s.ip = append(s.ns, ns), append(s.ip, fmt.Sprintf("10.231.%d.%d", i/250, i%250+1))
		bridge := "br0"
		if i*2 >= n {
			bridge = "br1"
		}
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", s.hub},
			[]string{"-n", s.hub, "link", "set", port, "master", bridge},
			[]string{"-n", s.hub, "link", "set", port, "up"},
			[]string{"-n", ns, "addr", "add", s.ip[i] + "/16", "dev", dev},
			[]string{"-n", ns, "link", "set", dev, "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"})
	}
	for _, args := range steps {
		if err := ipCmd(args...); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// node returns where node i runs.
func (s *split) node(i int) place { return place{ns: s.ns[i], ip: s.ip[i]} }

// cut takes the link between the halves down; heal brings it up again.
func (s *split) cut() error  { return ipCmd("-n", s.hub, "link", "set", s.link, "down") }
func (s *split) heal() error { return ipCmd("-n", s.hub, "link", "set", s.link, "up") }

// close removes the namespaces, and with them every link.
func (s *split) close() {
	for _, ns := range append(s.ns, s.hub) {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// command returns the command that runs name with args at p.
func (p place) command(name string, args ...string) *exec.Cmd {
	if p.ns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", p.ns, name}, args...)...)
}

// dialContext dials from inside p's namespace, so that the bench reaches
// the loopback-only API of a daemon that runs there. The socket is made
// by a thread that has entered the namespace; once made, it belongs to
// that namespace whichever thread uses it. The thread is never let go
// back to the scheduler (its goroutine ends locked), so no other
// goroutine runs in the namespace.
func (p place) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.ns == "" {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + p.ns)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("setns %s: %w", p.ns, err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}
