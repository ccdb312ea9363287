package store

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realmsync/realmsync/crdt"
)

// crashDirEnv tells a child process of TestCrash which store to write to.
const crashDirEnv = "REALMSYNC_CRASH_DIR"

// TestCrash kills a process that writes to a store with SIGKILL at random
// points, five times over, reopening the store after each kill: every
// write the child saw acknowledged must be there, and the realm must show
// what a replica that never crashed shows with the same ops.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes; skipped with -short")
	}
	dir := t.TempDir()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)

	acked := make(map[uint64]bool)
	for round := range 5 {
		delay := time.Duration(20+rng.IntN(200)) * time.Millisecond
		got := runAndKill(t, dir, delay)
		if len(got) == 0 {
			t.Fatalf("round %d: the child acknowledged nothing in %v", round, delay)
		}
		for _, seq := range got {
			acked[seq] = true
		}
		checkAfterCrash(t, dir, acked)
		t.Logf("round %d: killed after %v, %d writes acknowledged", round, delay, len(got))
	}
}

// runAndKill starts a child that writes to dir, kills it delay after its
// first acknowledgement, and returns the seqs it acknowledged.
func runAndKill(t *testing.T, dir string, delay time.Duration) []uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	first := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var once sync.Once
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s, ok := strings.CutPrefix(sc.Text(), "ack ")
			if !ok {
				continue
			}
			seq, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				continue
			}
			seqs = append(seqs, seq)
			once.Do(func() { close(first) })
		}
	}()
	select {
	case <-first:
		time.Sleep(delay)
	case <-done:
	case <-time.After(30 * time.Second):
		t.Error("the child acknowledged nothing within 30 s")
	}
	cmd.Process.Kill()
	<-done
	cmd.Wait()
	return seqs
}

// checkAfterCrash reopens the store and checks it against acked.
func checkAfterCrash(t *testing.T, dir string, acked map[uint64]bool) {
	t.Helper()
	s := mustOpen(t, dir, Options{})
	defer s.Close()
	a := newAuthor(t, s, keyFor(3))
	head, _ := a.r.Head(a.pub)
	for seq := range acked {
		if seq > head {
			t.Fatalf("op %d was acknowledged, but the chain ends at %d", seq, head)
		}
		id := fmt.Sprintf("m%09d", seq)
		if _, err := a.r.Object(crdt.ObjectKey{Collection: crdt.MessagesCollection, ID: id}); err != nil {
			t.Fatalf("acknowledged message %s: %v", id, err)
		}
	}
	a.wall = time.Now().UnixMilli()
	if got, want := a.r.Digest(), replay(t, a).Digest(); got != want {
		t.Fatalf("digest after crash = %s; a replica with the same %d ops has %s", got, head, want)
	}
}

// TestMain runs the crash child in place of the tests when TestCrash
// starts this binary as one.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		if err := crashChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// crashChild is the process TestCrash kills: it writes messages to the
// store in dir from 8 writers and prints "ack SEQ" for each write
// acknowledged, until it is killed or a write fails.
func crashChild(dir string) error {
	s, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	a, err := openAuthor(s, keyFor(3))
	if err != nil {
		return err
	}
	a.wall = time.Now().UnixMilli()
	var out sync.Mutex
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for {
				seq, err := a.send()
				if err != nil {
					errs <- err
					return
				}
				out.Lock()
				fmt.Printf("ack %d\n", seq)
				out.Unlock()
			}
		}()
	}
	return <-errs
}
