package crdt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output in testdata/*.txt")

// node is one replica in a scenario: a key named by a letter, a store and
// the realm replica in it.
type node struct {
	name  string
	priv  ed25519.PrivateKey
	pub   PublicKey
	st    *MemStorage
	realm *Realm
	skew  int64 // added to the scenario's wall clock
}

func testKey(name string) (ed25519.PrivateKey, PublicKey) {
	seed := sha256.Sum256([]byte("realmsync test key " + name))
	priv := ed25519.NewKeyFromSeed(seed[:])
	var pub PublicKey
	copy(pub[:], priv.Public().(ed25519.PublicKey))
	return priv, pub
}

// tb is what scenarios need of testing.TB and rapid.T alike.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// world runs a scenario: nodes, a shared wall clock and the realm id.
type world struct {
	t     tb
	nodes map[string]*node
	names map[PublicKey]string
	order []string
	id    RealmID
	now   int64 // wall clock in ms
	out   *strings.Builder
}

func newWorld(t tb) *world {
	return &world{t: t, nodes: map[string]*node{}, names: map[PublicKey]string{},
		now: 1_700_000_000_000, out: &strings.Builder{}}
}

func (w *world) node(name string) *node {
	if n, ok := w.nodes[name]; ok {
		return n
	}
	priv, pub := testKey(name)
	n := &node{name: name, priv: priv, pub: pub, st: NewMemStorage()}
	w.nodes[name] = n
	w.names[pub] = name
	w.order = append(w.order, name)
	if !w.id.IsZero() {
		n.realm = mustOpen(w.t, n.st, w.id)
	}
	return n
}

func mustOpen(t tb, st Storage, id RealmID) *Realm {
	r, err := Open(st, id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (w *world) printf(format string, args ...any) {
	fmt.Fprintf(w.out, "> "+format+"\n", args...)
}

// errName reduces an error to the sentinel it wraps, so golden files do not
// depend on keys or hashes.
func errName(err error) string {
	for _, s := range []struct {
		err  error
		name string
	}{
		{ErrMalformed, "malformed"}, {ErrTooLarge, "too large"},
		{ErrBadSignature, "bad signature"}, {ErrWrongRealm, "wrong realm"},
		{ErrBrokenChain, "broken chain"}, {ErrNotMember, "not a member"},
		{ErrNotPermitted, "not permitted"}, {ErrEquivocation, "equivocation"},
		{ErrClock, "clock"}, {ErrBadRole, "bad role"}, {ErrNotFound, "not found"},
	} {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return err.Error()
}

// commit commits a batch to a node's store and checks the invariant that
// reopening gives the same replica.
func (w *world) commit(n *node, b *Batch) {
	w.t.Helper()
	n.st.Commit(b)
	if n.realm == nil {
		return
	}
	again := mustOpen(w.t, n.st, w.id)
	if again.Digest() != n.realm.Digest() || !maps.Equal(again.VersionVector(), n.realm.VersionVector()) ||
		!maps.Equal(again.early, n.realm.early) || again.MessageCount() != n.realm.MessageCount() {
		w.t.Fatalf("%s: reopening the store gives another replica", n.name)
	}
	if scanned, err := again.countMessages(view{n.st, NewBatch()}); err != nil || scanned != n.realm.MessageCount() {
		w.t.Fatalf("%s: %d messages kept count of, %d in the index (%v)", n.name, n.realm.MessageCount(), scanned, err)
	}
	// Every visible message is in the arrival log, which is as long as
	// the replica says.
	arrived, last, err := again.Arrivals(0, math.MaxInt)
	if err != nil || last != n.realm.ArrivalHead() || again.ArrivalHead() != last {
		w.t.Fatalf("%s: arrival log of %d entries, head %d, reopened %d (%v)", n.name, last, n.realm.ArrivalHead(), again.ArrivalHead(), err)
	}
	visible, err := again.Messages("", math.MaxInt)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, m := range visible {
		if !slices.Contains(arrived, m.Key.ID) {
			w.t.Fatalf("%s: message %s is visible but not in the arrival log", n.name, m.Key.ID)
		}
	}
}

// run executes one scenario line.
func (w *world) run(line string) {
	w.now++
	f := strings.Fields(line)
	if who, ok := strings.CutSuffix(f[0], ":"); ok {
		w.write(w.node(who), f[1], f[2:])
		return
	}
	switch f[0] {
	case "deliver": // deliver FROM TO [reverse|shuffle SEED]
		w.deliver(w.node(f[1]), w.node(f[2]), f[3:])
	case "sync":
		w.sync()
	case "catchup": // catchup FROM TO
		w.catchUp(w.node(f[1]), w.node(f[2]))
	case "dump":
		w.dump(w.node(f[1]))
	case "digests":
		w.digests(f[1:])
	case "clock": // clock NODE +MS
		ms, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			w.t.Fatalf("clock: %v", err)
		}
		w.node(f[1]).skew = ms
	case "advance": // advance MS
		ms, _ := strconv.ParseInt(f[1], 10, 64)
		w.now += ms
	case "tick":
		n := w.node(f[1])
		b := NewBatch()
		res := n.realm.Tick(b, w.now+n.skew)
		w.commit(n, b)
		w.printf("stored %d", len(res.Stored))
	case "reopen":
		n := w.node(f[1])
		before := n.realm.Digest()
		n.realm = mustOpen(w.t, n.st, w.id)
		if n.realm.Digest() != before {
			w.printf("digest changed on reopen")
		}
	case "held":
		n := w.node(f[1])
		w.printf("held %d", n.realm.npend)
	default:
		w.t.Fatalf("unknown command %q", line)
	}
}

// write makes node n write one op.
func (w *world) write(n *node, verb string, args []string) {
	if verb == "create" {
		b := NewBatch()
		r, _, err := Create(n.st, b, n.priv, args[0], n.name, [16]byte{}, w.now+n.skew)
		if err != nil {
			w.printf("error: %s", errName(err))
			return
		}
		w.commit(n, b)
		n.realm, w.id = r, r.ID()
		for _, m := range w.nodes {
			if m != n {
				m.realm = mustOpen(w.t, m.st, w.id)
			}
		}
		return
	}
	if verb == "group" { // group N VERB ARGS...: N ops, one signature
		count, _ := strconv.Atoi(args[0])
		b := NewBatch()
		for range count {
			body := w.body(n, args[1], args[2:])
			if _, _, err := n.realm.WriteUnsigned(b, n.priv, body, w.now+n.skew); err != nil {
				w.printf("error: %s", errName(err))
			}
		}
		n.realm.SignHead(b, n.priv)
		w.commit(n, b)
		return
	}
	body := w.body(n, verb, args)
	b := NewBatch()
	_, _, err := n.realm.Write(b, n.priv, body, w.now+n.skew)
	if err != nil {
		w.printf("error: %s", errName(err))
		return
	}
	w.commit(n, b)
}

func (w *world) body(n *node, verb string, args []string) Body {
	obj := func(s string) (string, string) {
		if named, ok := strings.CutPrefix(s, "@"); ok { // @a3: the message a's op 3 creates
			seq, _ := strconv.ParseUint(strings.TrimLeft(named, "abcde"), 10, 64)
			return MessagesCollection, MessageID(w.node(strings.TrimRight(named, "0123456789")).pub, seq)
		}
		c, id, _ := strings.Cut(s, "/")
		return c, id
	}
	switch verb {
	case "set": // set COLL/ID f=v...
		c, id := obj(args[0])
		s := &Set{Collection: c, ID: id}
		for _, kv := range args[1:] {
			k, v, _ := strings.Cut(kv, "=")
			s.Fields = append(s.Fields, Field{Name: k, Value: []byte(v)})
		}
		slices.SortFunc(s.Fields, func(a, b Field) int { return cmpStr(a.Name, b.Name) })
		return s
	case "del":
		c, id := obj(args[0])
		return &Delete{Collection: c, ID: id}
	case "add": // add COLL/ID FIELD DELTA
		c, id := obj(args[0])
		d, _ := strconv.ParseInt(args[2], 10, 64)
		return &Counter{Collection: c, ID: id, Field: args[1], Delta: d}
	case "setadd":
		c, id := obj(args[0])
		return &SetAdd{Collection: c, ID: id, Field: args[1], Elem: []byte(args[2])}
	case "setrm":
		c, id := obj(args[0])
		rm := &SetRemove{Collection: c, ID: id, Field: args[1], Elem: []byte(args[2])}
		if o, err := n.realm.Object(ObjectKey{c, id}); err == nil {
			for _, s := range o.Sets {
				for _, e := range s.Elems {
					if s.Name == args[1] && string(e.Value) == args[2] {
						rm.Tags = e.Tags
					}
				}
			}
		}
		return rm
	case "name": // a message the engine names
		return &Set{Collection: MessagesCollection,
			Fields: []Field{{Name: "text", Value: []byte(strings.Join(args, " "))}}}
	case "msg":
		id := fmt.Sprintf("%s%d", n.name, w.now)
		return &Set{Collection: MessagesCollection, ID: id,
			Fields: []Field{{Name: "text", Value: []byte(strings.Join(args, " "))}}}
	case "grant", "role": // grant NODE ROLE [FROMSEQ]
		m := w.node(args[0])
		role, err := ParseRole(args[1])
		if err != nil {
			w.t.Fatal(err)
		}
		// The acceptance handshake tells the admin where the member's
		// own chain stands; a grant starts past it.
		seq, _ := n.realm.Head(m.pub)
		if m.realm != nil {
			own, _ := m.realm.Head(m.pub)
			seq = max(seq, own)
		}
		from := seq + 1
		if len(args) > 2 { // an explicit first seq
			from, _ = strconv.ParseUint(args[2], 10, 64)
		}
		if verb == "role" {
			return &ChangeRole{Member: m.pub, Role: role, FromSeq: from}
		}
		return &Grant{Member: m.pub, Role: role, FromSeq: from, Name: m.name}
	case "revoke":
		m := w.node(args[0])
		seq, _ := n.realm.Head(m.pub)
		return &Revoke{Member: m.pub, LastSeq: seq}
	case "leave":
		return &Leave{}
	case "revoke-offer":
		return &RevokeOffer{Offer: OfferID{byte(args[0][0])}}
	case "redeem":
		return &Redeem{Offer: OfferID{byte(args[0][0])}, Member: w.node(args[1]).pub}
	case "unknown":
		return &Unknown{K: 200, Raw: []byte(strings.Join(args, " "))}
	case "epoch": // epoch N: a new key epoch, its key sealed to the writer
		num, _ := strconv.ParseUint(args[0], 10, 32)
		return &Epoch{Number: uint32(num),
			Keys: []SealedKey{{Member: n.pub, Box: []byte("key of " + n.name)}}}
	}
	w.t.Fatalf("unknown op %q", verb)
	return nil
}

// ops returns every op n holds, in realm order.
func (w *world) ops(n *node) []*Op {
	var out []*Op
	for a, h := range n.realm.heads {
		for s := uint64(1); s <= h.seq; s++ {
			op, err := n.realm.Op(a, s)
			if err != nil {
				w.t.Fatal(err)
			}
			out = append(out, op)
		}
	}
	slices.SortFunc(out, func(x, y *Op) int { return x.Stamp().Compare(y.Stamp()) })
	return out
}

// deliver gives to every op from holds that to lacks, and prints the
// errors that come back.
func (w *world) deliver(from, to *node, how []string) {
	ops := w.ops(from)
	switch {
	case len(how) == 0:
	case how[0] == "reverse":
		slices.Reverse(ops)
	case how[0] == "shuffle":
		seed, _ := strconv.ParseUint(how[1], 10, 64)
		rng := rand.New(rand.NewPCG(seed, seed))
		rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	}
	errs := map[string]int{}
	for _, op := range ops {
		// An op of a group travels with the ops up to its signed one, as
		// gossip carries it.
		group := []*Op{op}
		for last := op; !last.Signed(); {
			next, err := from.realm.Op(op.Author, last.Seq+1)
			if err != nil {
				break // nothing here vouches for it
			}
			group, last = append(group, next), next
		}
		b := NewBatch()
		if _, err := to.realm.ApplyGroup(b, group, w.now+to.skew); err != nil {
			errs[errName(err)]++
		}
		w.commit(to, b)
	}
	for _, k := range slices.Sorted(mapKeys(errs)) {
		w.printf("%s: %d ops", k, errs[k])
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// sync runs catch-up between every pair until nothing changes, quietly:
// each node sends the other the chain ranges it lacks, as ranges.
func (w *world) sync() {
	for range 10 {
		changed := false
		for _, a := range w.order {
			for _, b := range w.order {
				if a != b && w.catchUp(w.nodes[a], w.nodes[b]) {
					changed = true
				}
			}
		}
		if !changed {
			return
		}
	}
}

// catchUp sends to every range of from's chains that to lacks, in realm
// order of the ranges' first ops, and reports whether to stored anything.
func (w *world) catchUp(from, to *node) bool {
	var ranges [][]*Op
	for a, h := range from.realm.heads {
		have, _ := to.realm.Head(a)
		var rg []*Op
		for s := have + 1; s <= h.seq; s++ {
			op, err := from.realm.Op(a, s)
			if err != nil {
				w.t.Fatal(err)
			}
			rg = append(rg, op)
		}
		rg = rg[:VouchedPrefix(rg)]
		if len(rg) > 0 {
			ranges = append(ranges, rg)
		}
	}
	slices.SortFunc(ranges, func(x, y []*Op) int { return x[0].Stamp().Compare(y[0].Stamp()) })
	stored := false
	for _, rg := range ranges {
		b := NewBatch()
		res, _ := to.realm.ApplyRange(b, rg, w.now+to.skew)
		w.commit(to, b)
		stored = stored || len(res.Stored) > 0
	}
	return stored
}

// dump prints a node's visible state.
func (w *world) dump(n *node) {
	var ms []string
	for _, m := range n.realm.Members() {
		ms = append(ms, w.names[m.Key]+"="+m.Role.String())
	}
	slices.Sort(ms)
	w.printf("members: %s", strings.Join(ms, " "))
	err := n.st.Scan(n.realm.keys.p+"b/", "", func(_ string, val []byte) bool {
		o, err := decodeObject(val)
		if err != nil {
			w.t.Fatal(err)
		}
		if o.visible() && o.Key.Collection != MessagesCollection {
			w.printf("%s", w.describe(o))
		}
		return true
	})
	if err != nil {
		w.t.Fatal(err)
	}
	msgs, err := n.realm.Messages("", 1000)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, m := range msgs {
		text, _ := m.Field("text")
		w.printf("message from %s: %s", w.names[m.Created.Author], text)
	}
	for _, id := range []byte("xyz") {
		if uses, revoked := n.realm.Offer(OfferID{id}); uses > 0 || revoked {
			w.printf("offer %c: uses %d revoked %v", id, uses, revoked)
		}
	}
	if num, keys := n.realm.KeyEpoch(); num > 0 {
		var to []string
		for _, k := range keys {
			to = append(to, w.names[k.Member]+":"+string(k.Box))
		}
		w.printf("epoch %d: %s", num, strings.Join(to, " "))
	}
}

func (w *world) describe(o *Object) string {
	var parts []string
	parts = append(parts, o.Key.Collection+"/"+o.Key.ID)
	for _, f := range o.Fields {
		parts = append(parts, f.Name+"="+string(f.Value))
	}
	for _, c := range o.Counters {
		parts = append(parts, fmt.Sprintf("%s#%d", c.Name, c.Value))
	}
	for _, s := range o.Sets {
		var el []string
		for _, e := range s.Elems {
			el = append(el, string(e.Value))
		}
		parts = append(parts, s.Name+"{"+strings.Join(el, ",")+"}")
	}
	return strings.Join(parts, " ")
}

// digests prints whether the named nodes' digests are all equal.
func (w *world) digests(names []string) {
	first := w.node(names[0]).realm.Digest()
	for _, n := range names[1:] {
		if w.node(n).realm.Digest() != first {
			w.printf("digests differ")
			return
		}
	}
	w.printf("digests equal")
}

// TestScenarios runs every testdata/*.txt script and compares what it
// prints with the "> " lines in the file; -rewrite updates them.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			w := newWorld(t)
			var got bytes.Buffer
			for _, line := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
				if strings.HasPrefix(line, ">") {
					continue
				}
				got.WriteString(line + "\n")
				if trimmed := strings.TrimSpace(line); trimmed != "" && !strings.HasPrefix(trimmed, "#") {
					w.out.Reset()
					w.run(trimmed)
					got.WriteString(w.out.String())
				}
			}
			if *rewrite {
				if err := os.WriteFile(file, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got.String() != string(raw) {
				t.Errorf("output differs from %s (run with -rewrite to update):\n%s",
					file, lineDiff(string(raw), got.String()))
			}
		})
	}
}

func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var x, y string
		if i < len(wl) {
			x = wl[i]
		}
		if i < len(gl) {
			y = gl[i]
		}
		if x != y {
			fmt.Fprintf(&b, "line %d:\n  want %q\n   got %q\n", i+1, x, y)
		}
	}
	return b.String()
}
