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

// A split is two network namespaces joined by one veth pair: the halves
// of the partition row. Processes of a half run in its namespace and
// listen on its address; cutting the veth link cuts every connection
// between the halves at once, as a real partition does (established
// connections stall, new dials fail), and bringing it up heals it.
// Making namespaces takes root and iproute2's ip; where either is
// missing, newSplit says why and the partition row is skipped.
type split struct {
	ns   [2]string // namespace names
	ip   [2]string // each half's address on the link
	link string    // the veth end in the first namespace
}

// place is where a process runs: a namespace ("" for the bench's own)
// and the address it listens on.
type place struct{ ns, ip string }

var onLoopback = place{ip: "127.0.0.1"}

func newSplit() (*split, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root to make network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("needs iproute2's ip to make network namespaces")
	}
	id := os.Getpid() % 100000
	s := &split{
		ns:   [2]string{fmt.Sprintf("rsbench-l%d", id), fmt.Sprintf("rsbench-r%d", id)},
		ip:   [2]string{"10.231.0.1", "10.231.0.2"},
		link: fmt.Sprintf("rsl%d", id),
	}
	peerLink := fmt.Sprintf("rsr%d", id)
	steps := [][]string{
		{"netns", "add", s.ns[0]},
		{"netns", "add", s.ns[1]},
		{"link", "add", s.link, "netns", s.ns[0], "type", "veth", "peer", "name", peerLink, "netns", s.ns[1]},
	}
	for i, dev := range []string{s.link, peerLink} {
		steps = append(steps,
			[]string{"-n", s.ns[i], "addr", "add", s.ip[i] + "/24", "dev", dev},
			[]string{"-n", s.ns[i], "link", "set", dev, "up"},
			[]string{"-n", s.ns[i], "link", "set", "lo", "up"})
	}
	for _, args := range steps {
		if err := ipCmd(args...); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// half returns where the processes of half i (0 or 1) run.
func (s *split) half(i int) place { return place{ns: s.ns[i], ip: s.ip[i]} }

// cut takes the link down; heal brings it up again.
func (s *split) cut() error  { return ipCmd("-n", s.ns[0], "link", "set", s.link, "down") }
func (s *split) heal() error { return ipCmd("-n", s.ns[0], "link", "set", s.link, "up") }

// close removes both namespaces, and with them the veth pair.
func (s *split) close() {
	for _, ns := range s.ns {
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
