package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A lan is a small network of namespaces for partition tests: one
// namespace per daemon, each joined by a veth pair to a bridge in a hub
// namespace of its own, so that nothing of the machine's own network is
// touched. Taking a daemon's veth end in the hub down cuts it off from
// the others (its connections stall, its dials fail); bringing it up
// heals it. Making namespaces takes root and iproute2's ip.
type lan struct {
	t    *testing.T
	hub  string
	ns   []string
	port []string // each daemon's veth end in the hub
	ip   []string
}

// netPlace is where a daemon runs: a namespace ("" for the test's own)
// and the address it listens on.
type netPlace struct{ ns, ip string }

var onLoopback = netPlace{ip: "127.0.0.1"}

func newLAN(t *testing.T, n int) (*lan, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root to make network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("needs iproute2's ip")
	}
	id := os.Getpid() % 100000
	l := &lan{t: t, hub: fmt.Sprintf("rst-hub%d", id)}
	t.Cleanup(l.close)
	if err := ip("netns", "add", l.hub); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"-n", l.hub, "link", "add", "br0", "type", "bridge"},
		{"-n", l.hub, "link", "set", "br0", "up"},
	}
	for i := range n {
		ns, port, dev := fmt.Sprintf("rst-n%d-%d", i, id), fmt.Sprintf("p%d", i), fmt.Sprintf("rst%d-%d", i, id)
		l.ns, l.port, l.ip = append(l.ns, ns), append(l.port, port), append(l.ip, fmt.Sprintf("10.233.0.%d", i+1))
		if err := ip("netns", "add", ns); err != nil {
			return nil, err
		}
		steps = append(steps,
			[]string{"link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", l.hub},
			[]string{"-n", l.hub, "link", "set", port, "master", "br0"},
			[]string{"-n", l.hub, "link", "set", port, "up"},
			[]string{"-n", ns, "addr", "add", l.ip[i] + "/24", "dev", dev},
			[]string{"-n", ns, "link", "set", dev, "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"})
	}
	for _, args := range steps {
		if err := ip(args...); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *lan) place(i int) netPlace { return netPlace{ns: l.ns[i], ip: l.ip[i]} }

// cut takes daemon i off the network; heal puts it back.
func (l *lan) cut(i int) {
	if err := ip("-n", l.hub, "link", "set", l.port[i], "down"); err != nil {
		l.t.Fatal(err)
	}
}

func (l *lan) heal(i int) {
	if err := ip("-n", l.hub, "link", "set", l.port[i], "up"); err != nil {
		l.t.Fatal(err)
	}
}

// close removes the namespaces, and with them their links.
func (l *lan) close() {
	for _, ns := range append(l.ns, l.hub) {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// command returns the command that runs name with args at p.
func (p netPlace) command(name string, args ...string) *exec.Cmd {
	if p.ns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", p.ns, name}, args...)...)
}

// dialContext dials from inside p's namespace, to reach the loopback-only
// API of a daemon there: a thread that entered the namespace makes the
// socket, which stays in it whichever thread uses it after. The thread's
// goroutine ends locked to it, so the thread is dropped, not reused.
func (p netPlace) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if p.ns == "" {
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
		conn, err := d.DialContext(ctx, network, addr)
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}
