package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/realmsync/realmsync/crdt"
)

// The benchmarks that need nodes in separate processes run this test
// binary again as a child: with childEnv set, TestMain runs one node that
// takes commands as JSON lines on stdin and answers each on stdout.
const childEnv = "REALMSYNC_TEST_CHILD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(rogueEnv); cfg != "" {
		if err := runRogue(cfg, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "rogue:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if dir := os.Getenv(childEnv); dir != "" {
		if err := runChild(dir, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// request is one command to a child node.
type request struct {
	Op      string          `json:"op"`
	Name    string          `json:"name,omitempty"`
	Realm   string          `json:"realm,omitempty"`
	Peer    string          `json:"peer,omitempty"`
	Addrs   []string        `json:"addrs,omitempty"`
	Count   int             `json:"count,omitempty"`
	Rate    float64         `json:"rate,omitempty"`    // ops/s; 0: as fast as Writers allow
	Writers int             `json:"writers,omitempty"` // concurrent writers when Rate is 0
	At      int64           `json:"at,omitempty"`      // paced: the first write at this Unix time (ns)
	Keys    []crdt.RealmKey `json:"keys,omitempty"`
}

// reply is a child's answer.
type reply struct {
	Err       string          `json:"err,omitempty"`
	Peer      string          `json:"peer,omitempty"`
	Addrs     []string        `json:"addrs,omitempty"`
	Realm     string          `json:"realm,omitempty"`
	Digest    string          `json:"digest,omitempty"`
	Latencies []float64       `json:"latencies,omitempty"` // ms, from a write's start to its arrival here
	Elapsed   float64         `json:"elapsed,omitempty"`   // ms
	Count     int             `json:"count,omitempty"`     // latencies: how many came by catch-up
	OpBytes   int             `json:"op_bytes,omitempty"`  // size of the last op written
	Keys      []crdt.RealmKey `json:"keys,omitempty"`
	Acks      []float64       `json:"acks,omitempty"` // ms, from each paced write's start to its ack
}

// child is the state of a node run as a child process.
type child struct {
	n *Node

	mu        sync.Mutex
	latencies []float64
	caughtUp  int // of them, how many came by catch-up
}

func runChild(dir string, in io.Reader, out io.Writer) error {
	if prof := os.Getenv(childEnv + "_CPUPROFILE"); prof != "" {
		f, err := os.Create(prof + "." + os.Getenv(childEnv+"_NAME"))
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	TuneGC() // as the realmsync binary does
	c := &child{}
	var logger *slog.Logger
	if os.Getenv(childEnv+"_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).
			With("node", os.Getenv(childEnv+"_NAME"))
	}
	n, err := New(Config{
		Logger:    logger,
		DataDir:   dir,
		Listen:    []string{"/ip4/127.0.0.1/tcp/0"},
		Name:      os.Getenv(childEnv + "_NAME"),
		onApplied: c.arrived,
	})
	if err != nil {
		return err
	}
	defer n.Close()
	c.n = n
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		var req request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return err
		}
		if req.Op == "quit" {
			return enc.Encode(reply{})
		}
		rep, err := c.do(req)
		if err != nil {
			rep = reply{Err: err.Error()}
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
	return sc.Err()
}

// arrived notes when the chat messages of other nodes arrive. A
// message's id starts with the time its write started, in ns.
func (c *child) arrived(ops []*crdt.Op, ranged bool) {
	now := time.Now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, op := range ops {
		s, ok := op.Body.(*crdt.Set)
		if !ok || s.Collection != crdt.MessagesCollection {
			continue
		}
		if len(s.Fields) == 0 || s.Fields[0].Name != "sent" {
			continue
		}
		t0, err := strconv.ParseInt(string(s.Fields[0].Value), 10, 64)
		if err == nil {
			c.latencies = append(c.latencies, float64(now-t0)/1e6)
			if ranged {
				c.caughtUp++
			}
		}
	}
}

func (c *child) do(req request) (reply, error) {
	ctx := context.Background()
	n := c.n
	var realm crdt.RealmID
	if req.Realm != "" {
		var err error
		if realm, err = crdt.ParseHash(req.Realm); err != nil {
			return reply{}, err
		}
	}
	switch req.Op {
	case "info":
		var addrs []string
		for _, a := range n.Addrs() {
			addrs = append(addrs, a.String())
		}
		return reply{Peer: n.ID().String(), Addrs: addrs}, nil
	case "create":
		id, err := n.CreateRealm(ctx, req.Name)
		return reply{Realm: id.String()}, err
	case "grant":
		id, err := peer.Decode(req.Peer)
		if err != nil {
			return reply{}, err
		}
		key, ok := authorOf(id)
		if !ok {
			return reply{}, errors.New("not an ed25519 peer id")
		}
		_, err = n.Write(ctx, realm, &crdt.Grant{Member: key, Role: crdt.RoleWriter, FromSeq: 1, Name: req.Name})
		if err != nil {
			return reply{}, err
		}
		rp, err := n.replica(realm)
		if err != nil {
			return reply{}, err
		}
		return reply{Keys: rp.ring.all()}, nil
	case "join":
		return reply{}, n.JoinRealm(realm, req.Keys)
	case "connect":
		for _, a := range req.Addrs {
			ai, err := peer.AddrInfoFromString(a)
			if err != nil {
				return reply{}, err
			}
			if err := n.Connect(ctx, *ai); err != nil {
				return reply{}, err
			}
		}
		return reply{}, nil
	case "write":
		start := time.Now()
		size, acks, err := c.write(ctx, realm, req)
		return reply{Elapsed: ms(time.Since(start)), OpBytes: size, Acks: acks}, err
	case "latencies":
		c.mu.Lock()
		defer c.mu.Unlock()
		l, k := c.latencies, c.caughtUp
		c.latencies, c.caughtUp = nil, 0
		return reply{Latencies: l, Count: k}, nil
	case "digest":
		var d crdt.Hash
		err := n.View(realm, func(r *crdt.Realm) error { d = r.Digest(); return nil })
		return reply{Digest: d.String()}, err
	}
	return reply{}, fmt.Errorf("unknown op %q", req.Op)
}

// write writes req.Count chat messages: paced at req.Rate, or as fast as
// req.Writers concurrent writers go.
func (c *child) write(ctx context.Context, realm crdt.RealmID, req request) (opBytes int, acks []float64, err error) {
	// A paced message carries when it was sent, for the latencies.
	msg := func(timed bool) *crdt.Set {
		text := crdt.Field{Name: "text", Value: []byte(`"a chat message of ordinary length"`)}
		if !timed {
			return &crdt.Set{Collection: crdt.MessagesCollection, Fields: []crdt.Field{text}}
		}
		sent := crdt.Field{Name: "sent", Value: strconv.AppendInt(nil, time.Now().UnixNano(), 10)}
		return &crdt.Set{Collection: crdt.MessagesCollection, Fields: []crdt.Field{sent, text}}
	}
	if req.Rate > 0 {
		every := time.Duration(float64(time.Second) / req.Rate)
		next := time.Now()
		if req.At != 0 {
			next = time.Unix(0, req.At)
		}
		for range req.Count {
			time.Sleep(time.Until(next))
			next = next.Add(every)
			start := time.Now()
			op, err := c.n.Write(ctx, realm, msg(true))
			if err != nil {
				return 0, nil, err
			}
			acks = append(acks, ms(time.Since(start)))
			opBytes = len(op.Bytes())
		}
		return opBytes, acks, nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, max(req.Writers, 1))
	for w := range max(req.Writers, 1) {
		wg.Go(func() {
			for i := w; i < req.Count; i += max(req.Writers, 1) {
				if _, err := c.n.Write(ctx, realm, msg(false)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return 0, nil, <-errs
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// proc is a child node as the parent sees it.
type proc struct {
	tb   testing.TB
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *json.Decoder
	peer string
	addr []string
}

// startSelf runs this test binary again with env added to its
// environment, and returns the running command and its stdin and stdout.
func startSelf(tb testing.TB, env ...string) (*exec.Cmd, io.WriteCloser, io.ReadCloser) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	return cmd, in, out
}

// startProc starts a node in a child process.
func startProc(tb testing.TB, name string) *proc {
	tb.Helper()
	cmd, in, out := startSelf(tb, childEnv+"="+tb.TempDir(), childEnv+"_NAME="+name)
	p := &proc{tb: tb, name: name, cmd: cmd, in: in, out: json.NewDecoder(out)}
	tb.Cleanup(p.stop)
	info := p.call(request{Op: "info"})
	p.peer, p.addr = info.Peer, info.Addrs
	return p
}

// call sends a command and returns the answer; an error fails the test.
func (p *proc) call(req request) reply {
	p.tb.Helper()
	b, _ := json.Marshal(req)
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		p.tb.Fatalf("%s: %v", p.name, err)
	}
	var rep reply
	if err := p.out.Decode(&rep); err != nil {
		p.tb.Fatalf("%s: %s: %v", p.name, req.Op, err)
	}
	if rep.Err != "" {
		p.tb.Fatalf("%s: %s: %s", p.name, req.Op, rep.Err)
	}
	return rep
}

func (p *proc) stop() {
	b, _ := json.Marshal(request{Op: "quit"})
	p.in.Write(append(b, '\n'))
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// cpu returns the CPU time (user and system) the child has used so far,
// from /proc: on a busy machine it varies far less than wall time.
func (p *proc) cpu() time.Duration {
	p.tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		p.tb.Skipf("no /proc here: %v", err)
	}
	// The fields after the command name (which may hold spaces) start
	// with the state; utime and stime are the 14th and 15th fields.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		p.tb.Fatalf("parse /proc/%d/stat: %v %v", p.cmd.Process.Pid, err1, err2)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick
}
