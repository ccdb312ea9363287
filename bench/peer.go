package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// The peers other than realmsync run as this program again, in a mode of
// their own: each prints its address, then takes commands on stdin, one
// JSON object a line, and answers each on stdout.

// command is one command to a peer process; each command reads the
// fields it needs.
type command struct {
	Op      string
	Addr    string  // connect: the peer to dial
	N       int     // how many messages or puts
	Rate    float64 // per second, for paced writes
	Writers int     // concurrent writers, for bursts
	Size    int     // payload bytes
	Prefix  string  // of the keys written
}

// serve prints the peer's address, then answers commands with handle
// until stdin ends; a nil answer is sent as {}.
func serve(addr string, handle func(command) (any, error)) error {
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"addr": addr})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var cmd command
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			return err
		}
		answer, err := handle(cmd)
		if err != nil {
			return err
		}
		if answer == nil {
			answer = struct{}{}
		}
		out.Encode(answer)
	}
	return sc.Err()
}

// hostAddr is h's first address with its peer id, for another peer to dial.
func hostAddr(h host.Host) string { return fmt.Sprintf("%s/p2p/%s", h.Addrs()[0], h.ID()) }

// join dials the peer at addr and waits until the topic has a peer, and
// then a heartbeat, for the mesh to form.
func join(ctx context.Context, h host.Host, addr string, topicPeers func() int) error {
	if err := dial(ctx, h, addr); err != nil {
		return err
	}
	for topicPeers() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	return nil
}

// paced calls fn n times, at rate calls per second.
func paced(n int, rate float64, fn func(i int) error) error {
	every := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for i := range n {
		time.Sleep(time.Until(next))
		next = next.Add(every)
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

// concurrently calls fn for 0..n-1 from the given number of goroutines
// and times each call; it returns the first error.
func concurrently(n, writers int, fn func(i int) error) (lat []time.Duration, elapsed time.Duration, err error) {
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range max(writers, 1) {
		wg.Go(func() {
			for i := range jobs {
				t0 := time.Now()
				e := fn(i)
				took := time.Since(t0)
				mu.Lock()
				lat = append(lat, took)
				if e != nil && err == nil {
					err = e
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return lat, time.Since(start), err
}

// dial connects h to the peer at addr, a multiaddr ending in /p2p/<id>.
func dial(ctx context.Context, h host.Host, addr string) error {
	ma, err := multiaddr.NewMultiaddr(addr)
	if err != nil {
		return err
	}
	info, err := peer.AddrInfoFromP2pAddr(ma)
	if err != nil {
		return err
	}
	return h.Connect(ctx, *info)
}

// peerProc is a peer process: a gossip peer or a go-ds-crdt peer.
type peerProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *json.Decoder
	addr string
	dir  string // its data dir, if it has one
}

func startGossipPeer() (*peerProc, error) { return startPeer(onLoopback, "gossip-peer") }

// ipEnv tells a peer process the address to listen on.
const ipEnv = "BENCH_PEER_IP"

// listenAddr is the multiaddr a peer process listens on.
func listenAddr() string {
	ip := os.Getenv(ipEnv)
	if ip == "" {
		ip = onLoopback.ip
	}
	return "/ip4/" + ip + "/tcp/0"
}

// startPeer runs this program again as a peer process at a place: args
// name its mode.
func startPeer(at place, args ...string) (*peerProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := at.command(exe, args...)
	cmd.Env = append(os.Environ(), ipEnv+"="+at.ip)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &peerProc{cmd: cmd, in: in, out: json.NewDecoder(stdout)}
	var hello struct{ Addr string }
	if err := p.out.Decode(&hello); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s: %w", args[0], err)
	}
	p.addr = hello.Addr
	return p, nil
}

func (p *peerProc) do(cmd map[string]any, answer any) error {
	raw, _ := json.Marshal(cmd)
	if _, err := fmt.Fprintf(p.in, "%s\n", raw); err != nil {
		return err
	}
	if answer == nil {
		answer = &struct{}{}
	}
	return p.out.Decode(answer)
}

// stop ends the peer's input, which ends the peer.
func (p *peerProc) stop() {
	p.in.Close()
	waitOrKill(p.cmd, 5*time.Second)
}

// waitOrKill waits for a process that was asked to end, and kills it if
// it has not after grace.
func waitOrKill(cmd *exec.Cmd, grace time.Duration) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}
