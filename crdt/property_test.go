package crdt

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// TestConvergence runs random scripts of writes, membership changes,
// gossip in random order with duplicates, partial catch-ups, skewed clocks
// and reopens on 3 to 5 replicas. Once everyone has caught up, every
// replica must have the same digest, and the same visible state as a naive
// model computed from the union of all ops.
func TestConvergence(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(3, 5).Draw(rt, "replicas")
		names := []string{"a", "b", "c", "d", "e"}[:n]
		w := newWorld(rt)
		var script []string
		run := func(line string) {
			script = append(script, line)
			w.run(line)
		}
		run("a: create prop")
		for _, x := range names[1:] {
			run(fmt.Sprintf("a: grant %s %s", x, rapid.SampledFrom([]string{"writer", "admin", "reader"}).Draw(rt, "role")))
		}
		steps := rapid.IntRange(10, 80).Draw(rt, "steps")
		for range steps {
			run(randomLine(rt, names))
		}
		run("advance 120000")
		for _, x := range names {
			run("tick " + x)
		}
		run("sync")
		defer func() {
			if rt.Failed() {
				rt.Logf("script:\n%s", strings.Join(script, "\n"))
			}
		}()
		first := w.node("a").realm.Digest()
		for _, x := range names[1:] {
			if w.node(x).realm.Digest() != first {
				rt.Fatalf("replica %s differs from a after catch-up", x)
			}
		}
		checkAgainstModel(rt, w, names)
	})
}

func randomLine(rt *rapid.T, names []string) string {
	x := rapid.SampledFrom(names).Draw(rt, "who")
	y := rapid.SampledFrom(names).Draw(rt, "other")
	obj := "o/" + rapid.SampledFrom([]string{"k1", "k2", "k3"}).Draw(rt, "obj")
	elem := rapid.SampledFrom([]string{"e1", "e2", "e3"}).Draw(rt, "elem")
	switch rapid.IntRange(0, 27).Draw(rt, "action") {
	case 0, 1, 2:
		f := rapid.SampledFrom([]string{"f1", "f2", "f3"}).Draw(rt, "field")
		return fmt.Sprintf("%s: set %s %s=%s%d", x, obj, f, x, rapid.IntRange(0, 9).Draw(rt, "v"))
	case 3:
		return fmt.Sprintf("%s: del %s", x, obj)
	case 4:
		return fmt.Sprintf("%s: add %s n %d", x, obj, rapid.IntRange(-5, 5).Draw(rt, "delta"))
	case 5:
		return fmt.Sprintf("%s: setadd %s s %s", x, obj, elem)
	case 6:
		return fmt.Sprintf("%s: setrm %s s %s", x, obj, elem)
	case 7, 8:
		return fmt.Sprintf("%s: msg m%d", x, rapid.IntRange(0, 99).Draw(rt, "text"))
	case 9:
		return fmt.Sprintf("%s: grant %s %s", x, y, rapid.SampledFrom([]string{"reader", "writer", "admin"}).Draw(rt, "role"))
	case 10:
		return fmt.Sprintf("%s: role %s %s", x, y, rapid.SampledFrom([]string{"reader", "writer", "admin"}).Draw(rt, "role"))
	case 11:
		return fmt.Sprintf("%s: revoke %s", x, y)
	case 12, 13, 14:
		return fmt.Sprintf("deliver %s %s shuffle %d", x, y, rapid.Uint64().Draw(rt, "seed"))
	case 15:
		return fmt.Sprintf("catchup %s %s", x, y)
	case 16:
		return fmt.Sprintf("clock %s %d", x, rapid.IntRange(-100, 100).Draw(rt, "skew"))
	case 17:
		return fmt.Sprintf("advance %d", rapid.IntRange(0, 50).Draw(rt, "ms"))
	case 18:
		return "reopen " + x
	case 19:
		return fmt.Sprintf("%s: redeem %s %s", x, rapid.SampledFrom([]string{"x", "y"}).Draw(rt, "offer"), y)
	case 20:
		return fmt.Sprintf("%s: revoke-offer %s", x, rapid.SampledFrom([]string{"x", "y"}).Draw(rt, "offer"))
	case 21:
		return fmt.Sprintf("%s: epoch %d", x, rapid.IntRange(1, 3).Draw(rt, "epoch"))
	case 22:
		return fmt.Sprintf("%s: unknown u%d", x, rapid.IntRange(0, 9).Draw(rt, "u"))
	case 25, 26:
		return fmt.Sprintf("%s: name n%d", x, rapid.IntRange(0, 99).Draw(rt, "text"))
	case 27: // touch a message the engine names, perhaps before it exists
		named := fmt.Sprintf("@%s%d", y, rapid.IntRange(2, 12).Draw(rt, "seq"))
		switch rapid.IntRange(0, 2).Draw(rt, "touch") {
		case 0:
			return fmt.Sprintf("%s: set %s text=%s%d", x, named, x, rapid.IntRange(0, 9).Draw(rt, "v"))
		case 1:
			return fmt.Sprintf("%s: del %s", x, named)
		}
		return fmt.Sprintf("%s: add %s n 1", x, named)
	case 23:
		n := rapid.IntRange(2, 4).Draw(rt, "group")
		if rapid.Bool().Draw(rt, "group of messages") {
			return fmt.Sprintf("%s: group %d msg g%d", x, n, rapid.IntRange(0, 99).Draw(rt, "text"))
		}
		return fmt.Sprintf("%s: group %d add %s n %d", x, n, obj, rapid.IntRange(-5, 5).Draw(rt, "delta"))
	}
	if rapid.IntRange(0, 9).Draw(rt, "rare") == 0 {
		return x + ": leave"
	}
	return fmt.Sprintf("clock %s %d", x, MaxClockSkew+rapid.IntRange(1, 1000).Draw(rt, "future"))
}

// checkAgainstModel compares replica a with the naive model of the union
// of every op any replica holds.
func checkAgainstModel(rt *rapid.T, w *world, names []string) {
	union := map[Hash]*Op{}
	for _, x := range names {
		for _, op := range w.ops(w.node(x)) {
			union[op.Hash()] = op
		}
	}
	ops := slices.SortedFunc(maps.Values(union), func(x, y *Op) int { return x.Stamp().Compare(y.Stamp()) })
	model := naiveModel(ops)
	r := w.node("a").realm

	var got []string
	for _, m := range r.Members() {
		got = append(got, fmt.Sprintf("%s=%s", w.names[m.Key], m.Role))
	}
	var want []string
	for k, role := range model.members {
		want = append(want, fmt.Sprintf("%s=%s", w.names[k], role))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		rt.Fatalf("members = %v, model says %v", got, want)
	}
	for _, key := range []string{"k1", "k2", "k3"} {
		obj, err := r.Object(ObjectKey{"o", key})
		gotS := "absent"
		if err == nil {
			gotS = w.describe(obj)
		}
		if wantS := model.describe("o", key); gotS != wantS {
			rt.Fatalf("object o/%s = %q, model says %q", key, gotS, wantS)
		}
	}
	msgs, err := r.Messages("", 10000)
	if err != nil {
		rt.Fatal(err)
	}
	var gotM []string
	for _, m := range msgs {
		gotM = append(gotM, m.Key.ID)
	}
	if wantM := model.messages(); !slices.Equal(gotM, wantM) {
		rt.Fatalf("messages = %v, model says %v", gotM, wantM)
	}
}

// model is a deliberately naive implementation of the rules in doc.go:
// membership by a plain replay with restarts, objects by folding every
// permitted op in realm order into maps.
type model struct {
	members map[PublicKey]Role
	objects map[ObjectKey]*modelObj
}

type modelObj struct {
	visible bool
	created Stamp
	fields  map[string]string
	counter map[string]int64
	sets    map[string]map[string]map[Hash]bool
}

type modelMember struct {
	froms  []uint64
	roles  []Role
	active bool
	cut    uint64
}

func (m *modelMember) at(seq uint64) Role {
	r := RoleNone
	for i, f := range m.froms {
		if f <= seq {
			r = m.roles[i]
		}
	}
	return r
}

// naiveModel computes the visible state of a set of ops (sorted in realm
// order) straight from the rules. Membership: replay the membership ops,
// each allowed by its author's role at its seq as the replay stands; after
// every op, look again at every op applied so far, and if one no longer
// has the role it needed, mark it void and replay from the start. Objects:
// fold every op whose author is a writer at its seq, in realm order.
func naiveModel(ops []*Op) *model {
	void := map[Hash]bool{}
	var mem map[PublicKey]*modelMember
	allowed := func(op *Op) bool {
		role := RoleNone
		if m := mem[op.Author]; m != nil {
			role = m.at(op.Seq)
		}
		if op.Kind() == KindLeave {
			return role >= RoleReader
		}
		return role == RoleAdmin
	}
replay:
	for {
		mem = map[PublicKey]*modelMember{}
		var applied []*Op
		for _, op := range ops {
			if op.Kind() == KindGenesis {
				mem[op.Author] = &modelMember{froms: []uint64{1}, roles: []Role{RoleAdmin}, active: true}
				continue
			}
			if !isMembership(op.Kind()) || void[op.Hash()] || !allowed(op) {
				continue
			}
			modelEffect(mem, op)
			for _, done := range applied {
				if !allowed(done) {
					void[done.Hash()] = true
					continue replay
				}
			}
			applied = append(applied, op)
		}
		break
	}
	md := &model{members: map[PublicKey]Role{}, objects: map[ObjectKey]*modelObj{}}
	for k, m := range mem {
		if m.active {
			md.members[k] = m.roles[len(m.roles)-1]
		}
	}
	for _, op := range ops {
		key, ok := objectOf(op.Body)
		m := mem[op.Author]
		if !ok || m == nil || m.at(op.Seq) < RoleWriter {
			continue
		}
		o := md.objects[key]
		if o == nil {
			o = &modelObj{}
			md.objects[key] = o
		}
		if _, del := op.Body.(*Delete); del {
			*o = modelObj{}
			continue
		}
		if !o.visible {
			*o = modelObj{visible: true, created: op.Stamp(), fields: map[string]string{},
				counter: map[string]int64{}, sets: map[string]map[string]map[Hash]bool{}}
		}
		if key.Collection == MessagesCollection && key.ID == MessageID(op.Author, op.Seq) {
			o.created = op.Stamp() // a message's own creating op names its author
		}
		switch b := op.Body.(type) {
		case *Set:
			for _, f := range b.Fields {
				o.fields[f.Name] = string(f.Value)
			}
		case *Counter:
			o.counter[b.Field] += b.Delta
		case *SetAdd:
			if o.sets[b.Field] == nil {
				o.sets[b.Field] = map[string]map[Hash]bool{}
			}
			if o.sets[b.Field][string(b.Elem)] == nil {
				o.sets[b.Field][string(b.Elem)] = map[Hash]bool{}
			}
			o.sets[b.Field][string(b.Elem)][op.Hash()] = true
		case *SetRemove:
			for _, tag := range b.Tags {
				delete(o.sets[b.Field][string(b.Elem)], tag)
			}
		}
	}
	return md
}

// modelEffect applies a permitted membership op to the members.
func modelEffect(mem map[PublicKey]*modelMember, op *Op) {
	var who PublicKey
	var last uint64
	switch b := op.Body.(type) {
	case *Grant:
		m := mem[b.Member]
		if m == nil {
			m = &modelMember{}
			mem[b.Member] = m
		}
		if !m.active {
			from := b.FromSeq
			if len(m.froms) > 0 {
				from = max(from, m.cut+1, m.froms[len(m.froms)-1])
			}
			m.froms, m.roles, m.active = append(m.froms, from), append(m.roles, b.Role), true
		}
		return
	case *ChangeRole:
		if m := mem[b.Member]; m != nil && m.active {
			from := max(b.FromSeq, m.froms[len(m.froms)-1])
			if b.Member == op.Author { // a change to oneself starts after it
				from = max(from, op.Seq+1)
			}
			m.froms, m.roles = append(m.froms, from), append(m.roles, b.Role)
		}
		return
	case *Revoke:
		who, last = b.Member, b.LastSeq
		if b.Member == op.Author {
			last = max(last, op.Seq)
		}
	case *Leave:
		who, last = op.Author, op.Seq
	default:
		return
	}
	m := mem[who]
	if m == nil || !m.active {
		return
	}
	var froms []uint64
	var roles []Role
	for i, f := range m.froms {
		if f <= last {
			froms, roles = append(froms, f), append(roles, m.roles[i])
		}
	}
	m.froms, m.roles = append(froms, last+1), append(roles, RoleNone)
	m.active, m.cut = false, last
}

// describe formats an object like world.describe, or "absent".
func (md *model) describe(coll, id string) string {
	o := md.objects[ObjectKey{coll, id}]
	if o == nil || !o.visible {
		return "absent"
	}
	parts := []string{coll + "/" + id}
	for _, f := range slices.Sorted(maps.Keys(o.fields)) {
		parts = append(parts, f+"="+o.fields[f])
	}
	for _, c := range slices.Sorted(maps.Keys(o.counter)) {
		parts = append(parts, fmt.Sprintf("%s#%d", c, o.counter[c]))
	}
	for _, s := range slices.Sorted(maps.Keys(o.sets)) {
		var el []string
		for _, e := range slices.Sorted(maps.Keys(o.sets[s])) {
			if len(o.sets[s][e]) > 0 {
				el = append(el, e)
			}
		}
		if len(el) > 0 {
			parts = append(parts, s+"{"+strings.Join(el, ",")+"}")
		}
	}
	return strings.Join(parts, " ")
}

// messages lists visible message ids in creation order.
func (md *model) messages() []string {
	type msg struct {
		id string
		at Stamp
	}
	var ms []msg
	for k, o := range md.objects {
		if k.Collection == MessagesCollection && o.visible {
			ms = append(ms, msg{k.ID, o.created})
		}
	}
	slices.SortFunc(ms, func(x, y msg) int { return x.at.Compare(y.at) })
	var out []string
	for _, m := range ms {
		out = append(out, m.id)
	}
	return out
}
