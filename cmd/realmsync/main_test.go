package main

import (
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
	"testing"
	"time"
)

// binary is the realmsync binary that TestMain builds, so that the tests
// run it as a user would: a process with arguments and exit codes.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "realmsync-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "realmsync")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building realmsync: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestRun(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      string // NAME=VALUE set for the case
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "no args", wantCode: 0, wantOut: "Usage:"},
		{name: "help", args: []string{"--help"}, wantCode: 0, wantOut: "daemon"},
		{name: "command help", args: []string{"invite", "create", "--help"}, wantCode: 0, wantOut: "Example"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantErr: "unknown command"},
		{name: "missing argument", args: []string{"send", "kitchen"}, wantCode: exitUsage, wantErr: "requires at least 2 arg"},
		{name: "bad flag", args: []string{"messages", "kitchen", "--limit", "many"}, wantCode: exitUsage, wantErr: "invalid argument"},
		{name: "no daemon", args: []string{"status", "--data", "/nonexistent/realmsync"}, wantCode: exitUnreachable, wantErr: "no daemon running"},
		{name: "api not on loopback", args: []string{"daemon", "--data", t.TempDir(), "--api", "0.0.0.0:7700"}, wantCode: exitUsage, wantErr: "loopback"},
		{name: "completion", args: []string{"completion", "bash"}, wantCode: 0, wantOut: "bash completion"},
		{name: "env twin", args: []string{"daemon", "--data", t.TempDir()}, env: "REALMSYNC_API=10.0.0.1:7700", wantCode: exitUsage, wantErr: "loopback"},
		{name: "bad env twin", args: []string{"messages", "kitchen"}, env: "REALMSYNC_LIMIT=many", wantCode: exitUsage, wantErr: "REALMSYNC_LIMIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if k, v, ok := strings.Cut(tt.env, "="); ok {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			if got := run(tt.args, strings.NewReader(""), &out, &errb); got != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", got, tt.wantCode, errb.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout = %q, want it to contain %q", out.String(), tt.wantOut)
			}
			if !strings.Contains(errb.String(), tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", errb.String(), tt.wantErr)
			}
			if tt.wantCode != 0 && strings.Count(strings.TrimSpace(errb.String()), "\n") > 0 {
				t.Errorf("error is more than one line: %q", errb.String())
			}
		})
	}
}

// cli runs the command in its own process with a data dir.
type cli struct {
	t    *testing.T
	data string
}

// run runs a client command and returns its stdout; it must exit 0.
func (c cli) run(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.exec(args...)
	if code != 0 {
		c.t.Fatalf("realmsync %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func (c cli) exec(args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(binary, append(args, "--data", c.data)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if x, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), x.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

// startDaemon starts `realmsync daemon` on loopback ports and waits until
// its api.json appears.
func startDaemon(t *testing.T, name string) (cli, *exec.Cmd) {
	t.Helper()
	c := cli{t: t, data: t.TempDir()}
	cmd := exec.Command(binary, "daemon", "--data", c.data, "--api", "127.0.0.1:0",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", "--name", name, "--log-level", "warn")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s daemon log:\n%s", name, logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(c.data, apiFile)); err == nil {
			return c, cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s daemon wrote no %s within 30 s: %s", name, apiFile, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// within retries check until it holds or 20 s pass.
func within(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKillAfterSend: a daemon killed with SIGKILL right after a send was
// acknowledged has the message when it starts again.
func TestKillAfterSend(t *testing.T) {
	a, ad := startDaemon(t, "alice")
	a.run("realm", "create", "diary")
	id := strings.TrimSpace(a.run("send", "diary", "written", "before", "the", "crash"))
	ad.Process.Kill()
	ad.Wait()
	if _, errOut, code := a.exec("status"); code != exitUnreachable {
		t.Errorf("status with a dead daemon: exit %d: %s", code, errOut)
	}
	os.Remove(filepath.Join(a.data, apiFile)) // left by the killed daemon
	cmd := exec.Command(binary, "daemon", "--data", a.data, "--api", "127.0.0.1:0",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", "--log-level", "warn")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	within(t, "the daemon restarts", func() bool {
		_, err := os.Stat(filepath.Join(a.data, apiFile))
		return err == nil
	})
	var got struct {
		Messages []struct {
			ID   string `json:"id"`
			Text string `json:"text"`
		}
	}
	if err := json.Unmarshal([]byte(a.run("messages", "diary", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Messages) != 1 || got.Messages[0].ID != id || got.Messages[0].Text != "written before the crash" {
		t.Errorf("after the crash: %+v, want message %s", got.Messages, id)
	}
}

// TestWalkthrough runs the README's walkthrough with two daemons: create a
// realm, invite, accept, chat both ways, remove, stop.
func TestWalkthrough(t *testing.T) {
	a, ad := startDaemon(t, "alice")
	b, bd := startDaemon(t, "bob")

	if fi, err := os.Stat(filepath.Join(a.data, tokenFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api-token: %v, mode %v", err, fi.Mode())
	}
	var info apiInfo
	raw, _ := os.ReadFile(filepath.Join(a.data, apiFile))
	if err := json.Unmarshal(raw, &info); err != nil || info.PID != ad.Process.Pid || !strings.HasPrefix(info.PeerID, "12D3Koo") {
		t.Fatalf("api.json = %s (%v)", raw, err)
	}
	if _, errOut, code := (cli{t: t, data: a.data}).exec("daemon", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false"); code != exitRefused || !strings.Contains(errOut, "in use") {
		t.Errorf("second daemon on the same data dir: exit %d: %s", code, errOut)
	}

	id := strings.TrimSpace(a.run("realm", "create", "kitchen"))
	token := strings.TrimSpace(a.run("invite", "create", "kitchen", "--role", "writer", "--qr", filepath.Join(t.TempDir(), "qr.png")))
	if !strings.HasPrefix(token, "REALMSYNC-") || strings.Contains(token, "\n") {
		t.Fatalf("invite create printed %q", token)
	}
	if got := strings.TrimSpace(b.run("invite", "accept", token)); got != id {
		t.Fatalf("invite accept printed %q, want %s", got, id)
	}
	within(t, "bob holds the realm", func() bool {
		out, _, code := b.exec("realm", "show", id)
		return code == 0 && strings.Contains(out, "kitchen") && strings.Contains(out, "writer")
	})

	a.run("send", "kitchen", "dinner", "at", "eight?")
	b.run("send", "kitchen", "yes, I'll bring bread")
	for _, c := range []cli{a, b} {
		within(t, "both messages everywhere", func() bool {
			out := c.run("messages", "kitchen")
			return strings.Contains(out, "alice: dinner at eight?") && strings.Contains(out, "bob: yes, I'll bring bread")
		})
	}
	// Follow on bob's side, chat on alice's.
	follow := exec.Command(binary, "messages", "kitchen", "--follow", "--limit", "1", "--data", b.data)
	var followed syncBuffer
	follow.Stdout = &followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	chat := exec.Command(binary, "chat", "kitchen", "--data", a.data)
	chatIn, err := chat.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var chatOut syncBuffer
	chat.Stdout = &chatOut
	if err := chat.Start(); err != nil {
		t.Fatal(err)
	}
	within(t, "chat shows the history", func() bool { return strings.Contains(chatOut.String(), "bob: yes") })
	fmt.Fprintln(chatIn, "typed in chat")
	b.run("send", "kitchen", "bob again")
	within(t, "follow and chat see the new messages", func() bool {
		f, c := followed.String(), chatOut.String()
		return strings.Contains(f, "alice: typed in chat") && strings.Contains(f, "bob: bob again") &&
			strings.Contains(c, "alice: typed in chat") && strings.Contains(c, "bob: bob again")
	})
	if strings.Contains(followed.String(), "dinner at eight") {
		t.Errorf("--limit 1 printed older history: %q", followed.String())
	}
	chatIn.Close() // Ctrl-D
	if err := chat.Wait(); err != nil {
		t.Errorf("chat after Ctrl-D: %v", err)
	}

	var members struct {
		Members []struct {
			PeerID string `json:"peer_id"`
			Name   string `json:"name"`
		}
	}
	if err := json.Unmarshal([]byte(a.run("member", "list", "kitchen", "--json")), &members); err != nil || len(members.Members) != 2 {
		t.Fatalf("member list --json: %+v, %v", members, err)
	}
	var bob string
	for _, m := range members.Members {
		if m.Name == "bob" {
			bob = m.PeerID
		}
	}
	a.run("member", "remove", "kitchen", bob)
	if _, errOut, code := a.exec("member", "remove", "kitchen", bob); code != exitRefused || !strings.Contains(errOut, "not_found") {
		t.Errorf("removing bob twice: exit %d: %s", code, errOut)
	}
	within(t, "bob's send is refused once he is removed", func() bool {
		_, errOut, code := b.exec("send", "kitchen", "am I still here?")
		return code == exitRefused && strings.Contains(errOut, "not_permitted")
	})

	// Metrics: the node's, the API's, libp2p's and Go's.
	apiToken, _ := os.ReadFile(filepath.Join(a.data, tokenFile))
	req, _ := http.NewRequest("GET", "http://"+info.Addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(apiToken)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"realmsync_ops_published_total", "realmsync_ops_applied_total{source=", "realmsync_realm_members{realm=\"" + id + "\"} 1",
		"realmsync_realm_messages{realm=", "realmsync_peers", `realmsync_api_requests_total{route="/v1/realms/{realm}/messages",status="201"}`,
		"go_goroutines", "libp2p_",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A graceful stop: exit 0, api.json gone.
	for _, d := range []struct {
		c   cli
		cmd *exec.Cmd
	}{{a, ad}, {b, bd}} {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- d.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon exit after SIGTERM: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("daemon did not stop within 20 s of SIGTERM")
		}
		if _, err := os.Stat(filepath.Join(d.c.data, apiFile)); err == nil {
			t.Errorf("api.json left behind after a clean stop")
		}
		if _, errOut, code := d.c.exec("status"); code != exitUnreachable {
			t.Errorf("status after stop: exit %d: %s", code, errOut)
		}
	}
}

// syncBuffer is a bytes.Buffer that a process writes while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
