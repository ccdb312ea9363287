package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realmsync/realmsync/crdt"
)

// TestGossipCarriesGroups: concurrent writers on one node have their ops
// combined into groups with one signature, and gossip carries the groups
// whole to the other member.
func TestGossipCarriesGroups(t *testing.T) {
	a := newTestNode(t, "a")
	var largest, viaGossip atomic.Int64
	b, err := New(Config{DataDir: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Name: "b",
		Logger: testLogger(t, "b"),
		onApplied: func(ops []*crdt.Op, ranged bool) {
			if ranged {
				return
			}
			viaGossip.Add(int64(len(ops)))
			for n := int64(len(ops)); ; {
				old := largest.Load()
				if n <= old || largest.CompareAndSwap(old, n) {
					break
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	id := createRealm(t, a, "groups")
	joined(t, a, b, id, crdt.RoleWriter)
	meshed(t, a, b, id)

	const writers, each = 32, 20
	var wg sync.WaitGroup
	signed := atomic.Int64{}
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				op, err := a.Write(context.Background(), id, message(fmt.Sprintf("w%d-%d", w, i)))
				if err != nil {
					t.Error(err)
					return
				}
				if op.Signed() {
					signed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	converge(t, id, a, b)
	if n := signed.Load(); n >= writers*each {
		t.Errorf("all %d writes signed one by one; want groups", n)
	}
	if largest.Load() < 2 {
		t.Errorf("largest gossip message held %d ops; want groups of more", largest.Load())
	}
	t.Logf("%d writes, %d signatures, %d ops by gossip, largest group %d",
		writers*each, signed.Load(), viaGossip.Load(), largest.Load())
}

// TestServeEndsRangesAtSignedOps: catch-up ranges of a chain written in
// groups each end at a signed op and stay within the range limit, and the
// unsigned end of a group whose signed op is missing is not sent.
func TestServeEndsRangesAtSignedOps(t *testing.T) {
	a := newTestNode(t, "a")
	id := createRealm(t, a, "ranges")
	rp, err := a.replica(id)
	if err != nil {
		t.Fatal(err)
	}
	const groups, size, tail = 45, 50, 30
	rp.mu.Lock()
	b := crdt.NewBatch()
	for i := range groups*size + tail {
		if _, _, err := rp.r.WriteUnsigned(b, a.priv, message(fmt.Sprint(i)), a.nowMs()); err != nil {
			t.Fatal(err)
		}
		if i%size == size-1 && i < groups*size {
			rp.r.SignHead(b, a.priv)
		}
	}
	head, _ := rp.r.Head(a.Author())
	p, err := a.st.Queue(b)
	rp.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	sent, err := serveChain(w, rp.r, a.Author(), 1, head, func() {})
	if err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if want := int(head) - tail; sent != want {
		t.Errorf("sent %d ops; want %d (all but the unvouched tail)", sent, want)
	}
	next, ranges := uint64(1), 0
	for buf.Len() > 0 {
		typ, payload, err := readFrame(&buf)
		if err != nil || typ != frameRange {
			t.Fatalf("frame %d: type %d, %v", ranges, typ, err)
		}
		_, ops, err := decodeRange(payload)
		if err != nil {
			t.Fatal(err)
		}
		last := ops[len(ops)-1]
		if ops[0].Seq != next || !last.Signed() || len(ops) > maxOpsPerRange {
			t.Errorf("range %d: seqs %d..%d, %d ops, last signed %v", ranges, ops[0].Seq, last.Seq, len(ops), last.Signed())
		}
		if err := last.VerifySignature(); err != nil {
			t.Errorf("range %d: %v", ranges, err)
		}
		next, ranges = last.Seq+1, ranges+1
	}
	if ranges < 2 {
		t.Errorf("%d ranges; want the chain split", ranges)
	}
}

// TestServeOnlyDurableOwnOps: catch-up never sends this node's own ops
// that are not on disk yet, since a crash could undo them and the node
// would then write other ops at their seqs.
func TestServeOnlyDurableOwnOps(t *testing.T) {
	a := newTestNode(t, "a")
	id := createRealm(t, a, "durable")
	writeMany(t, a, id, 20, "m")
	rp, err := a.replica(id)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := rp.r.Head(a.Author())
	if got := rp.durable.Load(); got != head {
		t.Fatalf("durable head %d after acknowledged writes, want %d", got, head)
	}
	// As if the newest group were still syncing: durable ends where the
	// group before it ends, at a signed op.
	var ops []*crdt.Op
	rp.r.Ops(a.Author(), 1, func(op *crdt.Op) bool { ops = append(ops, op); return true })
	k := crdt.VouchedPrefix(ops[:len(ops)-1])
	if k == 0 {
		t.Fatal("no signed op before the head")
	}
	rp.durable.Store(uint64(k))
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	sent, err := rp.serve(w, map[crdt.PublicKey]uint64{}, func() {})
	if err != nil {
		t.Fatal(err)
	}
	if sent != k {
		t.Errorf("served %d ops, want the %d on disk of %d", sent, k, head)
	}
}

// TestRemovedMemberLearnsIt: a removed member is cut off at once, yet its
// node learns of the removal (by the notice) and refuses to write.
func TestRemovedMemberLearnsIt(t *testing.T) {
	a, b := newTestNode(t, "a"), newTestNode(t, "b")
	id := createRealm(t, a, "notice")
	joined(t, a, b, id, crdt.RoleWriter)
	if err := a.RemoveMember(context.Background(), id, b.Author()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for {
		var role crdt.Role
		b.View(id, func(r *crdt.Realm) error { role = r.Role(b.Author()); return nil })
		if role == crdt.RoleNone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b still thinks it is a %s", role)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := b.Write(context.Background(), id, message("after removal")); !errors.Is(err, crdt.ErrNotMember) {
		t.Errorf("write after removal: %v, want ErrNotMember", err)
	}
}
