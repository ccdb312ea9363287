package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realmsync/realmsync/api"
)

// Faults with real daemon processes: crashes under load and network
// partitions. FAULTS.md lists each with its test.

// node is a daemon process over one data dir that a test can kill and
// start again, at a place (a network namespace and address, or loopback).
type node struct {
	t    *testing.T
	name string
	data string
	at   netPlace
	cmd  *exec.Cmd
	logs *syncBuffer
	api  *client
}

func newNode(t *testing.T, name string, at netPlace) *node {
	return &node{t: t, name: name, data: t.TempDir(), at: at, logs: &syncBuffer{}}
}

// start starts the daemon and waits until its API answers.
func (n *node) start() {
	n.t.Helper()
	os.Remove(filepath.Join(n.data, apiFile)) // a killed daemon leaves it
	n.cmd = n.at.command(binary, "daemon", "--data", n.data, "--api", "127.0.0.1:0",
		"--listen", "/ip4/"+n.at.ip+"/tcp/0", "--mdns=false", "--name", n.name, "--log-level", "warn")
	n.cmd.Stderr = n.logs
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	cmd := n.cmd
	n.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if n.t.Failed() {
			n.t.Logf("%s daemon log:\n%s", n.name, n.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, err := os.ReadFile(filepath.Join(n.data, apiFile))
		var info apiInfo
		if err == nil && json.Unmarshal(raw, &info) == nil && info.PID == cmd.Process.Pid {
			token, err := os.ReadFile(filepath.Join(n.data, tokenFile))
			if err != nil {
				n.t.Fatal(err)
			}
			n.api = &client{base: "http://" + info.Addr, token: strings.TrimSpace(string(token)), where: n.name,
				http: &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: n.at.dialContext}}}
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: no %s within 30 s: %s", n.name, apiFile, n.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the daemon with SIGKILL.
func (n *node) kill() {
	n.cmd.Process.Kill()
	n.cmd.Wait()
}

// call is an API call that must succeed.
func (n *node) call(method, path string, body, out any) {
	n.t.Helper()
	if _, err := n.api.call(method, path, body, out); err != nil {
		n.t.Fatalf("%s: %s %s: %v", n.name, method, path, err)
	}
}

// messageIDs lists the ids of every message of the realm, in its order.
func (n *node) messageIDs(realm string) ([]string, error) {
	var ids []string
	for after := ""; ; {
		var page struct{ Messages []api.Message }
		if _, err := n.api.call("GET", "/v1/realms/"+realm+"/messages?limit=1000&after="+after, nil, &page); err != nil {
			return nil, err
		}
		for _, m := range page.Messages {
			ids = append(ids, m.ID)
		}
		if len(page.Messages) < 1000 {
			return ids, nil
		}
		after = page.Messages[len(page.Messages)-1].ID
	}
}

// share creates a realm on the first node and admits the others as
// writers by invites, and returns the realm id.
func share(t *testing.T, nodes ...*node) string {
	t.Helper()
	var realm api.Realm
	nodes[0].call("POST", "/v1/realms", map[string]string{"name": "faults"}, &realm)
	for _, n := range nodes[1:] {
		var inv api.Invite
		nodes[0].call("POST", "/v1/realms/"+realm.ID+"/invites", map[string]string{"role": "writer"}, &inv)
		n.call("POST", "/v1/invites/accept", map[string]string{"token": inv.Token}, nil)
	}
	return realm.ID
}

// converged waits until every node holds want messages (want < 0: the
// same as the first node) in the same order, and returns the order.
func converged(t *testing.T, realm string, within time.Duration, nodes ...*node) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var first []string
		same := true
		var counts []int
		for i, n := range nodes {
			ids, err := n.messageIDs(realm)
			if err != nil {
				t.Fatal(err)
			}
			counts = append(counts, len(ids))
			if i == 0 {
				first = ids
			} else if !slices.Equal(ids, first) {
				same = false
			}
		}
		if same {
			return first
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged within %s: message counts %v", within, counts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCrashUnderWrites: a daemon with four clients posting messages as
// fast as it acknowledges them is killed with SIGKILL twenty times, at
// random moments, and started again each time. Every message it
// acknowledged before a kill is there after the restart, and at the end
// its peer, which stayed up, holds the same messages in the same order.
func TestCrashUnderWrites(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	a, b := newNode(t, "a", onLoopback), newNode(t, "b", onLoopback)
	a.start()
	b.start()
	realm := share(t, a, b)

	var acked []string
	for round := range 20 {
		var mu sync.Mutex
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var m api.Message
					if _, err := a.api.call("POST", "/v1/realms/"+realm+"/messages",
						map[string]string{"text": fmt.Sprintf("round %d writer %d message %d", round, w, i)}, &m); err != nil {
						return // killed: what was not answered is not owed
					}
					mu.Lock()
					acked = append(acked, m.ID)
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
		a.kill()
		close(stop)
		wg.Wait()
		a.start()
		have, err := a.messageIDs(realm)
		if err != nil {
			t.Fatal(err)
		}
		held := make(map[string]bool, len(have))
		for _, id := range have {
			held[id] = true
		}
		for _, id := range acked {
			if !held[id] {
				t.Fatalf("round %d: message %s was acknowledged before the kill and is gone", round, id)
			}
		}
	}
	if len(acked) < 20 {
		t.Fatalf("only %d messages acknowledged in twenty rounds: the test wrote too little to mean much", len(acked))
	}
	ids := converged(t, realm, time.Minute, a, b)
	t.Logf("%d messages acknowledged across twenty kills; both daemons hold %d, in the same order", len(acked), len(ids))
}

// TestPartition: three daemons, each in a network namespace of its own,
// joined by a bridge. One is cut off; both sides keep writing; the link
// comes back; all three hold every message, in the same order, within
// seconds. It needs root (network namespaces) and iproute2.
func TestPartition(t *testing.T) {
	lan, err := newLAN(t, 3)
	if err != nil {
		t.Skip("partition test: ", err)
	}
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprint("n", i), lan.place(i))
		nodes[i].start()
	}
	realm := share(t, nodes...)
	post := func(n *node, count int, label string) {
		for i := range count {
			n.call("POST", "/v1/realms/"+realm+"/messages", map[string]string{"text": fmt.Sprintf("%s %d", label, i)}, nil)
		}
	}
	post(nodes[0], 10, "before")
	converged(t, realm, 30*time.Second, nodes...)
	// n1 and n2 joined through n0; they find each other by the addresses
	// n0 passes on, and stay connected while n0 is cut off.
	within(t, "every daemon connected to both others", func() bool {
		for _, n := range nodes {
			var st api.Status
			n.call("GET", "/v1/status", nil, &st)
			if st.Peers < 2 {
				return false
			}
		}
		return true
	})

	lan.cut(0)
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { post(n, 50, fmt.Sprint("cut off, from n", i)) })
	}
	wg.Wait()
	// The far side settles on its own 100 and the first 10: nothing
	// crossed the cut.
	if ids := converged(t, realm, 30*time.Second, nodes[1], nodes[2]); len(ids) != 110 {
		t.Fatalf("during the cut the far side holds %d messages, want 110", len(ids))
	}
	healed := time.Now()
	lan.heal(0)
	ids := converged(t, realm, 30*time.Second, nodes...)
	if len(ids) != 160 {
		t.Fatalf("after healing every node holds %d messages, want 160", len(ids))
	}
	t.Logf("converged %s after healing", time.Since(healed).Round(time.Millisecond))
}

// TestLoad: three daemons, 100,000 messages posted through their APIs by
// 24 concurrent clients, 8 on each. Afterwards each daemon holds exactly
// the messages that were acknowledged, each once, in the same order.
func TestLoad(t *testing.T) {
	const total, clientsPerNode = 100_000, 8
	nodes := []*node{newNode(t, "a", onLoopback), newNode(t, "b", onLoopback), newNode(t, "c", onLoopback)}
	for _, n := range nodes {
		n.start()
	}
	realm := share(t, nodes...)
	var next atomic.Int64
	acked := make([][]string, len(nodes)*clientsPerNode)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range acked {
		n := nodes[c%len(nodes)]
		wg.Go(func() {
			for i := next.Add(1); i <= total; i = next.Add(1) {
				var m api.Message
				if _, err := n.api.call("POST", "/v1/realms/"+realm+"/messages",
					map[string]string{"text": fmt.Sprintf("message %d", i)}, &m); err != nil {
					t.Errorf("%s: message %d: %v", n.name, i, err)
					return
				}
				acked[c] = append(acked[c], m.ID)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	posted := time.Since(start)
	want := make(map[string]bool, total)
	for _, ids := range acked {
		for _, id := range ids {
			if want[id] {
				t.Fatalf("message id %s acknowledged twice", id)
			}
			want[id] = true
		}
	}
	if len(want) != total {
		t.Fatalf("%d messages acknowledged, want %d", len(want), total)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for _, n := range nodes {
		for {
			var r api.Realm
			n.call("GET", "/v1/realms/"+realm, nil, &r)
			if r.Messages >= total {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %d of %d messages", n.name, r.Messages, total)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	synced := time.Since(start)
	var first []string
	for i, n := range nodes {
		ids, err := n.messageIDs(realm)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != total {
			t.Fatalf("%s holds %d messages, want %d", n.name, len(ids), total)
		}
		for _, id := range ids {
			if !want[id] {
				t.Fatalf("%s holds message %s, which was never acknowledged", n.name, id)
			}
		}
		if i == 0 {
			first = ids
		} else if !slices.Equal(ids, first) {
			t.Fatalf("%s holds the messages in another order than %s", n.name, nodes[0].name)
		}
	}
	t.Logf("%d messages posted in %s (%.0f/s), on all three daemons after %s", total, posted.Round(time.Millisecond),
		float64(total)/posted.Seconds(), synced.Round(time.Millisecond))
}
