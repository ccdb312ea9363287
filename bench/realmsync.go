package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// realmsync runs as a user runs it: the realmsync binary, one process per
// daemon, driven through its HTTP API.

// buildRealmsync builds the daemon of the checkout this module sits in
// (its parent directory) into dir.
func buildRealmsync(dir string) (string, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return "", err
	}
	if mod, err := os.ReadFile(filepath.Join(root, "go.mod")); err != nil ||
		!strings.HasPrefix(string(mod), "module github.com/realmsync/realmsync\n") {
		return "", fmt.Errorf("run the benchmarks from the bench directory of a realmsync checkout")
	}
	bin := filepath.Join(dir, "realmsync")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/realmsync")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build realmsync: %w", err)
	}
	return bin, nil
}

// daemon is one realmsync daemon process.
type daemon struct {
	name  string
	dir   string
	at    place
	base  string // http://127.0.0.1:port
	token string
	cmd   *exec.Cmd
	http  *http.Client
}

// startDaemon starts a daemon at a place with its own data dir and free
// ports, and waits until its API answers.
func startDaemon(bin, dir, name string, at place) (*daemon, error) {
	// Keep a connection per writer: the default keeps two idle ones, and
	// 32 writers would dial and close a connection per request.
	d := &daemon{name: name, dir: dir, at: at, http: &http.Client{Timeout: time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, DialContext: at.dialContext}}}
	log, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return nil, err
	}
	d.cmd = at.command(bin, "daemon", "--data", dir, "--api", "127.0.0.1:0",
		"--listen", "/ip4/"+at.ip+"/tcp/0", "--mdns=false", "--name", name, "--log-level", "warn")
	d.cmd.Stderr = log
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		raw, err := os.ReadFile(filepath.Join(dir, "api.json"))
		if err == nil {
			var info struct{ Addr string }
			if json.Unmarshal(raw, &info) == nil && info.Addr != "" {
				d.base = "http://" + info.Addr
				break
			}
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("%s: no api.json within a minute (see %s)", name, log.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
	token, err := os.ReadFile(filepath.Join(dir, "api-token"))
	if err != nil {
		d.stop()
		return nil, err
	}
	d.token = strings.TrimSpace(string(token))
	return d, nil
}

// stop stops the daemon as a user does, with SIGTERM.
func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	waitOrKill(d.cmd, 20*time.Second)
}

// call sends one API request; out, if not nil, receives the JSON answer.
func (d *daemon) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, _ := json.Marshal(in)
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, d.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %s %s: %s", d.name, method, path, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// shareRealm creates a realm on a and lets b in with an invite, as the
// README's walkthrough does; it returns the realm id once b can write.
func shareRealm(a, b *daemon) (string, error) {
	var realm struct{ ID string }
	if err := a.call("POST", "/v1/realms", map[string]string{"name": "bench"}, &realm); err != nil {
		return "", err
	}
	return realm.ID, admit(a, b, realm.ID, "writer")
}

// admit lets invitee into the realm in a role with an invite that
// inviter creates, and returns once invitee holds the role.
func admit(inviter, invitee *daemon, realm, role string) error {
	var inv struct{ Token string }
	if err := inviter.call("POST", "/v1/realms/"+realm+"/invites", map[string]string{"role": role}, &inv); err != nil {
		return err
	}
	if err := invitee.call("POST", "/v1/invites/accept", map[string]string{"token": inv.Token}, nil); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var r struct{ Role string }
		if err := invitee.call("GET", "/v1/realms/"+realm, nil, &r); err == nil && r.Role == role {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not become a %s of the realm within a minute", invitee.name, role)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// message is the body of a chat message of ordinary length.
var message = map[string]string{"text": "a chat message of ordinary length, about this long"}

// durableWrites posts n messages from the given number of concurrent
// writers; each is timed from the request to its answer, which the
// daemon gives once the message is on disk.
func durableWrites(d *daemon, realm string, n, writers int) ([]time.Duration, time.Duration, error) {
	return concurrently(n, writers, func(int) error {
		return d.call("POST", "/v1/realms/"+realm+"/messages", message, nil)
	})
}

// post sends one chat message and returns its id.
func (d *daemon) post(realm string) (string, error) {
	var m struct{ ID string }
	err := d.call("POST", "/v1/realms/"+realm+"/messages", message, &m)
	return m.ID, err
}

// messages is how many messages the daemon shows in the realm.
func (d *daemon) messages(realm string) (int, error) {
	var r struct{ Messages int }
	err := d.call("GET", "/v1/realms/"+realm, nil, &r)
	return r.Messages, err
}

// watcher reads a daemon's event stream of a realm and notes when each
// message arrived.
type watcher struct {
	resp    *http.Response
	mu      sync.Mutex
	arrived map[string]time.Time
}

// watch opens d's event stream of the realm.
func watch(d *daemon, realm string) (*watcher, error) {
	req, _ := http.NewRequest("GET", d.base+"/v1/realms/"+realm+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+d.token)
	client := &http.Client{Transport: &http.Transport{DialContext: d.at.dialContext}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: events: %s", d.name, resp.Status)
	}
	w := &watcher{resp: resp, arrived: make(map[string]time.Time)}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "message":
				now := time.Now()
				var m struct{ ID string }
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m) == nil {
					w.mu.Lock()
					w.arrived[m.ID] = now
					w.mu.Unlock()
				}
			}
		}
	}()
	return w, nil
}

func (w *watcher) close() { w.resp.Body.Close() }

// when returns when the message arrived, if it has.
func (w *watcher) when(id string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.arrived[id]
	return at, ok
}

// sent is a message posted at a time by one daemon of a group.
type sent struct {
	id   string
	at   time.Time
	from int
}

// arrivals waits (up to wait) until every watcher but the sender's has
// every message, and returns the latencies of those that arrived and
// how many did out of how many were due.
func arrivals(ws []*watcher, msgs []sent, wait time.Duration) (lat []time.Duration, got, due int) {
	deadline := time.Now().Add(wait)
	for {
		lat, got, due = lat[:0], 0, 0
		for _, m := range msgs {
			for i, w := range ws {
				if i == m.from {
					continue
				}
				due++
				if at, ok := w.when(m.id); ok {
					got++
					lat = append(lat, at.Sub(m.at))
				}
			}
		}
		if got == due || time.Now().After(deadline) {
			return lat, got, due
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// liveLatency posts n messages on a at rate per second and times each
// from the start of its request on a to its event on b's event stream.
func liveLatency(a, b *daemon, realm string, n int, rate float64) (lat []time.Duration, delivered int, err error) {
	w, err := watch(b, realm)
	if err != nil {
		return nil, 0, err
	}
	defer w.close()
	time.Sleep(200 * time.Millisecond) // the stream is open
	var msgs []sent
	err = paced(n, rate, func(int) error {
		t0 := time.Now()
		id, err := a.post(realm)
		msgs = append(msgs, sent{id: id, at: t0})
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	lat, delivered, _ = arrivals([]*watcher{nil, w}, msgs, 30*time.Second)
	return lat, delivered, nil
}

// metrics reads the daemon's Prometheus metrics and returns the samples
// whose name (with labels) starts with prefix, summed by that full name.
func (d *daemon) metrics(prefix string) (map[string]float64, error) {
	req, _ := http.NewRequest("GET", d.base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, prefix) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(value, &v); err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}

// rss is the resident memory of the daemon's process, from /proc.
func (d *daemon) rss() (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", d.cmd.Process.Pid)
}

// diskBytes is the size of the files under dir.
func diskBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}

// startAgain starts a stopped daemon again on its data dir.
func (d *daemon) startAgain(bin string) error {
	os.Remove(filepath.Join(d.dir, "api.json")) // a stale one would name the old port
	nd, err := startDaemon(bin, d.dir, d.name, d.at)
	if err != nil {
		return err
	}
	*d = *nd
	return nil
}

// restart stops the daemon and starts it again on the same data dir, and
// returns how long it took from the start of the new process until the
// API answered a read of the realm's messages.
func (d *daemon) restart(bin, realm string) (time.Duration, error) {
	d.stop()
	start := time.Now()
	if err := d.startAgain(bin); err != nil {
		return 0, err
	}
	for {
		if err := d.call("GET", "/v1/realms/"+realm+"/messages?limit=1", nil, nil); err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > time.Minute {
			return 0, fmt.Errorf("%s: not serving a minute after a restart", d.name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// catchUp stops b, writes n messages on a, starts b again (it dials the
// members it knows by itself) and returns how long b took from its start
// to a's message count, the bytes that crossed the loopback meanwhile,
// and the catch-up rounds that brought b ops (each one round trip).
func catchUp(bin string, a, b *daemon, realm string, n int) (time.Duration, int64, float64, error) {
	b.stop()
	if err := fill(a, realm, n); err != nil {
		return 0, 0, 0, err
	}
	want, err := a.messages(realm)
	if err != nil {
		return 0, 0, 0, err
	}
	wire := loopbackBytes()
	start := time.Now()
	if err := b.startAgain(bin); err != nil {
		return 0, 0, 0, err
	}
	for {
		if got, err := b.messages(realm); err == nil && got >= want {
			took, bytes := time.Since(start), loopbackBytes()-wire
			m, err := b.metrics("realmsync_catchup_duration_seconds_count")
			return took, bytes, m["realmsync_catchup_duration_seconds_count"], err
		}
		if time.Since(start) > 5*time.Minute {
			return 0, 0, 0, fmt.Errorf("%s did not catch up within five minutes", b.name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loopbackBytes is what the loopback interface has carried, or 0 where
// Linux's counters are not there.
func loopbackBytes() int64 {
	raw, err := os.ReadFile("/sys/class/net/lo/statistics/tx_bytes")
	if err != nil {
		return 0
	}
	var n int64
	fmt.Sscan(strings.TrimSpace(string(raw)), &n)
	return n
}
